/* Trend keywords (worker option trend_keywords, read with the published configuration): a
 * customer's stored message that contains one is told to the worker as a lifecycle event
 * `keyword`, which counts the customers per keyword (worker/patterns.c). */
#ifndef KEFU_GATEWAY_KEYWORDS_H
#define KEFU_GATEWAY_KEYWORDS_H

/** The published trend_keywords (NULL or "" = none): parsed when it changed. With none, the
 * message path does not call this module at all. */
void gw_keywords_set(const char *spec);
void gw_keywords_stop(void);

#endif
