-- Retail example, part 10: while the customer waits for a human.

on("queue_wait", { after = 60 }, function(c)
  c:reply("当前咨询人数较多，请您耐心等待，客服马上就来。\nMany customers are waiting; an agent will be with you shortly.")
end)

on("queue_wait", { after = 300 }, function(c)
  c:reply("抱歉让您久等了。您也可以拨打热线 {hotline}，或留言后离开，我们会尽快回复。\n" ..
          "Sorry for the wait. You can also call {hotline}, or leave a message and we will reply.")
end)

on("no_agent", function(c)
  c:reply("当前暂无空闲客服，您的问题已进入队列，客服上线后会第一时间回复您。\n" ..
          "No agent is free right now; you are in the queue and will be answered first thing.")
end)
