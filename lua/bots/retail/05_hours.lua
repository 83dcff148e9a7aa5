-- Retail example, part 3: greeting, off-hours and holiday notices.

-- The greeting only during opening hours; outside them the off_hours event speaks.
on("opened", { hours = "open" }, function(c)
  c:say("greeting")
end)

-- Runs before "opened"/"message" once per closed period: tell the customer when we are back.
on("off_hours", function(c)
  if c.holiday then
    c:say("holiday")
  else
    c:say("off_hours")
  end
end)
