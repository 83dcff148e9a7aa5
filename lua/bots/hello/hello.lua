-- The smallest useful rule set: a greeting, two answers, and a human on request.
-- Try it: kefu-bot lua/bots/hello   (then type messages, one per line)

bot { name = "Kefu Bot" }

on("opened", "您好！请问有什么可以帮您？ Hello! How can I help?")

faq {
  { q = { "退货", "return*" }, a = "7 天内可以无理由退货。 Returns are free within 7 days." },
  { q = { "发货", "ship*" }, a = "现货 24 小时内发货。 In-stock items ship within 24 hours." },
}

rule {
  keywords = { "人工", "human", "agent" },
  reply = "正在为您转接人工客服。 Passing you to an agent.",
  handoff = true,
}

on("message", "抱歉，我没有理解。输入“人工”转接客服。 Sorry, I did not get that; type \"agent\" for a human.")
