-- Retail example, part 8: frequently asked questions in English. Keywords match whole words
-- ("return" does not match "returning"); a trailing * matches a word start ("refund*" matches
-- "refunds", "refunded"). Case and full-width letters do not matter.

faq {
  name = "faq-en",
  { q = { "return*", "refund*", "send back", "money back" },
    a = "You can return any item within {return_days} days: open My Orders, choose \"Return\", " ..
        "and the refund reaches your original payment method 1-3 working days after we get it." },
  { q = { "exchange", "other size", "another size", "other colour", "other color" },
    a = "Request an exchange in My Orders and pick the new size or colour; we ship it as soon " ..
        "as the original arrives." },
  { q = { "ship*", "dispatch*", "deliver*", "when will i get", "arrive" },
    a = "Items in stock ship within 24 hours; pre-orders ship on the date shown on the product page." },
  { q = { "track*", "where is my order", "parcel", "package" },
    a = "Track your parcel in My Orders > Track shipment." },
  { q = { "shipping fee", "shipping cost", "postage", "free shipping" },
    a = "Shipping is free over 99 yuan; below that it costs 8 yuan." },
  { q = { "invoice*", "receipt", "fapiao" },
    a = "Choose an electronic invoice at checkout; it is e-mailed when the order ships." },
  { q = { "coupon*", "discount*", "promo code", "voucher*" },
    a = "Your coupons are under Me > Coupons; the best one is applied at checkout automatically." },
  { q = { "member*", "points", "loyalty", "vip" },
    a = "You earn 1 point per yuan spent; points pay part of later orders." },
  { q = { "change address", "change my address", "wrong address" },
    a = "You can change the address in My Orders until the order ships." },
  { q = { "pay*", "credit card", "alipay", "wechat pay" },
    a = "We accept WeChat Pay, Alipay, UnionPay and major credit cards." },
  { q = { "warranty", "repair*", "broken", "defect*" },
    a = "Every item has a one-year warranty. Send us photos through an after-sales request; " ..
        "we pay shipping both ways." },
  { q = { "size chart", "sizing", "what size" },
    a = "Each product page has a size chart; between two sizes, take the larger one." },
  { q = { "opening hours", "business hours", "when are you open" },
    a = "Agents work 09:00-21:00 on weekdays and 10:00-18:00 on weekends (China time); I am here all day." },
  { q = { "phone", "hotline", "call you" },
    a = "Call us at {hotline} during opening hours." },
}
