-- Retail example, part 1: who the bot is, the shop's facts, reply templates and the business
-- calendar. Every file of this directory is loaded in name order into one rule set.

bot { name = "小智 Kefu Assistant", max_replies = 3 }

-- Values any reply can use as {name}.
vars {
  shop = "kefu 商城",
  shop_en = "kefu Mall",
  hotline = "400-800-1234",
  return_days = 7,
}

-- Standard lines, used with c:say("name"). Besides vars, a template can use {customer_name},
-- {ticket}, {channel}, {bot_name}, {now_time}, {today}, {next_open}, {next_open_time},
-- {next_open_date}, {holiday} and any field given to c:say(name, {field = value}).
templates {
  greeting = "您好，欢迎光临{shop}！我是智能助手小智，请直接输入您的问题，例如“怎么退货”。\n" ..
             "Hello, welcome to {shop_en}! Ask me anything, e.g. \"how do I return an item\".",
  off_hours = "您好，现在是非工作时间（工作日 09:00-21:00，周末 10:00-18:00）。" ..
              "您可以先留言，人工客服将在 {next_open} 上线后回复您。\n" ..
              "We are closed now; an agent will answer your message at {next_open} (China time).",
  holiday = "{holiday}期间人工客服暂停服务，将于 {next_open} 恢复。常见问题仍可直接问我。\n" ..
            "Our agents are on holiday ({holiday}) until {next_open}; I can still answer common questions.",
  handoff_zh = "好的，正在为您转接人工客服，请稍候。",
  handoff_en = "Sure, I am passing you to one of our agents. Please hold on.",
  handoff_closed_zh = "人工客服已下班，您的留言已记录，我们会在 {next_open} 优先处理。",
  handoff_closed_en = "Our agents are off duty; your message is queued and will be answered at {next_open}.",
  complaint_zh = "非常抱歉给您带来不好的体验！已为您优先转接客服主管，请稍候。",
  complaint_en = "We are very sorry about this. A supervisor-level agent will take over right away.",
  unknown_zh = "抱歉，我还没学会回答这个问题。您可以换个说法，或输入“人工”转接人工客服。",
  unknown_en = "Sorry, I do not know that one yet. Try other words, or type \"agent\" for a human.",
  closing_zh = "感谢您的咨询，祝您购物愉快！如有其他问题欢迎随时联系我们。",
  closing_en = "Thank you for contacting {shop_en}. Have a nice day!",
}

-- Opening hours in China time. Ranges may cross midnight ("22:00-02:00" runs into the next
-- day), a day may have several ranges, and a make-up workday (调休) keeps Monday's hours.
calendar {
  timezone = "Asia/Shanghai",
  hours = {
    weekdays = "09:00-21:00",
    weekend = {"10:00-12:00", "13:00-18:00"},
  },
  groups = {
    vip = { daily = "08:00-24:00" },
    night = { daily = "22:00-06:00", ignore_holidays = true },
  },
  -- Example dates: replace them with the official schedule of the year.
  holidays = {
    ["2026-10-01..2026-10-07"] = "国庆节 National Day",
    ["2027-01-01"] = "元旦 New Year's Day",
  },
  workdays = { "2026-09-27", "2026-10-10" },   -- a Sunday and a Saturday worked instead
}
