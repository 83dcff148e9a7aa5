-- Retail example, part 6: patterns and conversation state. An order number is remembered for
-- the agent and for later answers.

rule {
  name = "order number",
  pattern = "(%d%d%d%d%d%d%d%d%d%d?%d?%d?)",     -- 9 to 12 digits
  when = function(c, text)
    return text:find("订单") or text:lower():find("order")
  end,
  run = function(c, text, number)
    c.state.order = number
    c:tag("has-order")
    if lang_of(c, text) == "zh" then
      c:reply("已记录您的订单号 {order}，请问遇到了什么问题？", { order = number })
    else
      c:reply("Noted your order {order}. What went wrong with it?", { order = number })
    end
  end,
}
