-- Retail example, part 9: saying goodbye, and what to do when nothing matched.

-- "Thanks, that's all": close without a human (unless the text also says something is wrong).
rule {
  name = "goodbye",
  keywords = { "谢谢", "没有了", "再见", "thanks", "thank you", "bye", "that's all" },
  none = { "不", "没用", "还有", "not", "but" },
  run = function(c, text)
    say_in_lang(c, text, "closing")
    c:finish("resolved")
  end,
}

-- Nothing matched: say so once, then hand over on the second miss.
on("message", function(c, text)
  c.state.misses = (c.state.misses or 0) + 1
  if c.state.misses >= 2 then
    say_in_lang(c, text, c.off_hours and "handoff_closed" or "handoff")
    c:handoff("bot could not answer")
  else
    say_in_lang(c, text, "unknown")
  end
end)
