MODEL (
  name staging.stg_jaffle_shop__tweets,
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column tweeted_on
  ),
  grain tweet_id,
  description 'Tweets about the shop, one row per tweet (latest extract), incremental by tweet day (tweeted_on: partitions by day on engines that partition, such as Spark). Not used by the marts. Source: raw_jaffle_shop.tweets.',
  column_descriptions (
    tweet_id = 'Tweet key (UUID string).',
    customer_id = 'Customer who tweeted; key of stg_jaffle_shop__customers.',
    tweet_content = 'Free text of the tweet.',
    tweeted_at = 'When the tweet was posted (UTC).',
    tweeted_on = 'Day the tweet was posted (tweeted_at truncated to midnight UTC): the model''s time column.'
  ),
  audits (
    not_null(columns := (tweet_id, tweeted_at, tweeted_on)),
    unique_key(column := tweet_id)
  )
);

WITH window_keys AS (
  SELECT DISTINCT
    raw.id
  FROM raw_jaffle_shop.tweets AS raw
  WHERE
    raw.tweeted_at BETWEEN @start_ts AND @end_ts
), latest AS (
  SELECT
    raw.id,
    raw.user_id,
    raw.content,
    raw.tweeted_at
  FROM raw_jaffle_shop.tweets AS raw
  WHERE
    /* skipped for long windows (a whole-history build), where it costs more than it saves */
    @only_in_narrow_window(raw.id IN (
      SELECT
        window_keys.id
      FROM window_keys
    ))
  QUALIFY
    @latest_row_per_key(raw.id)
)
SELECT
  latest.id AS tweet_id,
  latest.user_id AS customer_id,
  latest.content AS tweet_content,
  latest.tweeted_at AS tweeted_at,
  DATE_TRUNC('DAY', latest.tweeted_at)::TIMESTAMP AS tweeted_on
FROM latest
WHERE
  latest.tweeted_at BETWEEN @start_ts AND @end_ts
