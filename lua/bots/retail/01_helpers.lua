-- Retail example, part 2: small helpers the other files share (all files see one environment).

-- True when the text holds a Chinese character (CJK unified ideographs, U+4E00..U+9FFF).
function is_chinese(text)
  return text ~= nil and text:find("[\228-\233][\128-\191][\128-\191]") ~= nil
end

-- The customer's language: from this message if it says, else from earlier ones; kept in the
-- conversation's state so later events answer in the same language.
function lang_of(c, text)
  if text and text:find("%a") and not is_chinese(text) then
    c.state.lang = "en"
  elseif is_chinese(text) then
    c.state.lang = "zh"
  end
  return c.state.lang or "zh"
end

-- c:say(name .. "_zh") or c:say(name .. "_en") in the customer's language.
function say_in_lang(c, text, name, fields)
  c:say(name .. "_" .. lang_of(c, text), fields)
end
