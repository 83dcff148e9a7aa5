-- Retail example, part 4: complaints and other sensitive conversations. A complaint raises the
-- priority, is classified, alerts the supervisors and goes to a human at once.

rule {
  name = "complaint",
  keywords = { "投诉", "差评", "举报", "骗子", "欺诈", "12315", "消协", "太差劲", "垃圾",
               "complain*", "terrible", "scam", "fraud", "disgusting" },
  priority = "high",
  category = "complaint",
  tags = "complaint",
  sensitive = "complaint",
  run = function(c, text)
    say_in_lang(c, text, "complaint")
    c:handoff("complaint")
  end,
}

-- Media, lawyers and threats to stop buying are sensitive too, but the bot may keep answering.
rule {
  name = "sensitive",
  keywords = { "记者", "媒体", "曝光", "律师", "起诉", "再也不买", "journalist", "lawyer", "sue",
               "never buy*" },
  priority = "high",
  sensitive = "media, legal or churn threat",
  tags = "escalation",
  continue = true,
}
