-- Retail example, part 5: asking for a human. Message rules run in file order, so this one,
-- placed before the FAQ files, wins over an FAQ answer: "人工退货" goes to a person.

rule {
  name = "wants a human",
  keywords = { "人工", "真人", "转接", "客服代表", "human", "real person", "agent", "operator",
               "talk to someone" },
  run = function(c, text)
    if c.off_hours then
      say_in_lang(c, text, "handoff_closed")
    else
      say_in_lang(c, text, "handoff")
    end
    c:handoff("customer asked for a human")
  end,
}
