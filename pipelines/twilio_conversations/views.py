"""Ready-made SQL views over the loaded tables, for analysts and BI tools.

`create_views(pipeline)` creates (or replaces) the views below in the pipeline's dataset, next to
`services`, `users` and `user_conversations`. The SQL is plain enough to run unchanged on DuckDB
and PostgreSQL: `count(...) FILTER (WHERE ...)`, `coalesce`, `CASE` and casts only. Each
template names its tables as `{services}`, `{users}` and `{user_conversations}`; `create_views`
fills in the destination's qualified names.

Views:

* `user_conversation_summary`: one row per user and service (users without conversations
  included; an identity is unique per service only) with their conversation counts by state,
  muted conversations and unread messages.
* `service_summary`: one row per Conversation Service: users, conversations by state,
  memberships, muted memberships and unread messages.
* `stale_conversations`: memberships in conversations that went inactive or closed while the
  user still has unread messages there, with the time the conversation went quiet.

Twilio reports `unread_messages_count` as null until a participant's read horizon
(`last_read_message_index`) is set: such memberships count as `never_read_*`, add nothing to
`total_unread` and are not "stale" (their unread count is unknown).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

SOURCE_TABLES = ("services", "users", "user_conversations")

USER_CONVERSATION_SUMMARY_SQL = """
SELECT
    u.chat_service_sid,
    s.friendly_name AS service_name,
    u.sid AS user_sid,
    u.identity,
    count(uc.conversation_sid) AS conversations,
    count(uc.conversation_sid) FILTER (WHERE uc.conversation_state = 'active')
        AS active_conversations,
    count(uc.conversation_sid) FILTER (WHERE uc.conversation_state = 'inactive')
        AS inactive_conversations,
    count(uc.conversation_sid) FILTER (WHERE uc.conversation_state = 'closed')
        AS closed_conversations,
    count(uc.conversation_sid) FILTER (WHERE uc.notification_level = 'muted')
        AS muted_conversations,
    count(uc.conversation_sid) FILTER (WHERE uc.unread_messages_count > 0)
        AS conversations_with_unread,
    count(uc.conversation_sid) FILTER (WHERE uc.last_read_message_index IS NULL)
        AS never_read_conversations,
    CAST(coalesce(sum(uc.unread_messages_count), 0) AS BIGINT) AS total_unread,
    max(uc.date_updated) AS last_date_updated
FROM {users} AS u
LEFT JOIN {user_conversations} AS uc
    ON uc.chat_service_sid = u.chat_service_sid AND uc.user_sid = u.sid
LEFT JOIN {services} AS s
    ON s.sid = u.chat_service_sid
GROUP BY u.chat_service_sid, s.friendly_name, u.sid, u.identity
"""

SERVICE_SUMMARY_SQL = """
SELECT
    s.sid AS chat_service_sid,
    s.friendly_name AS service_name,
    coalesce(u.users, 0) AS users,
    coalesce(c.users_with_conversations, 0) AS users_with_conversations,
    coalesce(c.conversations, 0) AS conversations,
    coalesce(c.active_conversations, 0) AS active_conversations,
    coalesce(c.inactive_conversations, 0) AS inactive_conversations,
    coalesce(c.closed_conversations, 0) AS closed_conversations,
    coalesce(c.memberships, 0) AS memberships,
    coalesce(c.muted_memberships, 0) AS muted_memberships,
    coalesce(c.never_read_memberships, 0) AS never_read_memberships,
    coalesce(c.total_unread, 0) AS total_unread,
    c.last_date_updated
FROM {services} AS s
LEFT JOIN (
    SELECT chat_service_sid, count(*) AS users
    FROM {users}
    GROUP BY chat_service_sid
) AS u ON u.chat_service_sid = s.sid
LEFT JOIN (
    SELECT
        chat_service_sid,
        count(DISTINCT user_sid) AS users_with_conversations,
        count(DISTINCT conversation_sid) AS conversations,
        count(DISTINCT conversation_sid) FILTER (WHERE conversation_state = 'active')
            AS active_conversations,
        count(DISTINCT conversation_sid) FILTER (WHERE conversation_state = 'inactive')
            AS inactive_conversations,
        count(DISTINCT conversation_sid) FILTER (WHERE conversation_state = 'closed')
            AS closed_conversations,
        count(*) AS memberships,
        count(*) FILTER (WHERE notification_level = 'muted') AS muted_memberships,
        count(*) FILTER (WHERE last_read_message_index IS NULL) AS never_read_memberships,
        CAST(coalesce(sum(unread_messages_count), 0) AS BIGINT) AS total_unread,
        max(date_updated) AS last_date_updated
    FROM {user_conversations}
    GROUP BY chat_service_sid
) AS c ON c.chat_service_sid = s.sid
"""

STALE_CONVERSATIONS_SQL = """
SELECT
    uc.chat_service_sid,
    s.friendly_name AS service_name,
    uc.user_sid,
    u.identity,
    uc.conversation_sid,
    uc.friendly_name,
    uc.conversation_state,
    uc.notification_level,
    uc.unread_messages_count,
    uc.last_read_message_index,
    CASE
        WHEN uc.conversation_state = 'closed'
            THEN coalesce(uc.timers__date_closed, uc.timers__date_inactive, uc.date_updated)
        ELSE coalesce(uc.timers__date_inactive, uc.date_updated)
    END AS stale_since,
    uc.timers__date_inactive,
    uc.timers__date_closed,
    uc.date_updated
FROM {user_conversations} AS uc
LEFT JOIN {users} AS u
    ON u.chat_service_sid = uc.chat_service_sid AND u.sid = uc.user_sid
LEFT JOIN {services} AS s
    ON s.sid = uc.chat_service_sid
WHERE uc.conversation_state IN ('inactive', 'closed')
    AND uc.unread_messages_count > 0
"""

VIEWS: dict[str, str] = {
    "user_conversation_summary": USER_CONVERSATION_SUMMARY_SQL,
    "service_summary": SERVICE_SUMMARY_SQL,
    "stale_conversations": STALE_CONVERSATIONS_SQL,
}

# Example queries over the views. Table names are unqualified: run them through
# `pipeline.sql_client()` (which sets the dataset as search path) or after `USE twilio` in DuckDB
# / `SET search_path TO twilio` in PostgreSQL. They run unchanged on both.
EXAMPLE_QUERIES: dict[str, str] = {
    "Users with the most unread messages": """
SELECT identity, service_name, conversations, active_conversations, muted_conversations,
       total_unread
FROM user_conversation_summary
ORDER BY total_unread DESC, identity
LIMIT 5""",
    "Services at a glance": """
SELECT service_name, users, conversations, active_conversations, inactive_conversations,
       closed_conversations, muted_memberships, total_unread
FROM service_summary
ORDER BY service_name""",
    "Unread messages left in conversations that went quiet": """
SELECT identity, service_name, count(*) AS stale_conversations,
       CAST(sum(unread_messages_count) AS BIGINT) AS unread,
       CAST(min(stale_since) AS DATE) AS oldest_since
FROM stale_conversations
GROUP BY identity, service_name
ORDER BY unread DESC, identity
LIMIT 5""",
}

# Destinations whose SQL dialect runs the views above and that keep views between sessions.
SUPPORTED_DESTINATIONS = frozenset({"duckdb", "motherduck", "postgres"})


def _supports_views(pipeline: Any) -> bool:
    destination_type = str(pipeline.destination.destination_type).rsplit(".", 1)[-1]
    return destination_type in SUPPORTED_DESTINATIONS


def drop_views(pipeline: Any) -> list[str]:
    """Drop the views, e.g. before a full refresh drops their tables (PostgreSQL refuses to drop
    a table that a view depends on). Returns the names of the views it dropped."""
    if not _supports_views(pipeline):
        return []
    dropped: list[str] = []
    with pipeline.sql_client() as client:
        if not client.has_dataset():
            return []
        for view in VIEWS:
            client.execute_sql(f"DROP VIEW IF EXISTS {client.make_qualified_table_name(view)}")
            dropped.append(view)
    return dropped


def create_views(pipeline: Any) -> list[str]:
    """Create or replace the views in `pipeline`'s dataset; return the names created.

    Needs a destination with persistent SQL views (DuckDB, MotherDuck, PostgreSQL); for others
    (the filesystem destination, for one) it logs why and returns an empty list, so a runner may
    call it after every load. Raises when a view cannot be created (a source table missing,
    for one: every load creates all three, even empty).
    On PostgreSQL, a view whose columns changed between versions is dropped and recreated
    (`CREATE OR REPLACE VIEW` may only append columns there).
    """
    destination_type = str(pipeline.destination.destination_type).rsplit(".", 1)[-1]
    if not _supports_views(pipeline):
        logger.info("views not created: destination %s is not supported", destination_type)
        return []
    created: list[str] = []
    with pipeline.sql_client() as client:
        tables = {name: client.make_qualified_table_name(name) for name in SOURCE_TABLES}
        for view, template in VIEWS.items():
            qualified = client.make_qualified_table_name(view)
            select = template.format(**tables).strip()
            try:
                client.execute_sql(f"CREATE OR REPLACE VIEW {qualified} AS\n{select}")
            except Exception:
                if destination_type != "postgres":
                    raise
                with client.begin_transaction():
                    client.execute_sql(f"DROP VIEW IF EXISTS {qualified}")
                    client.execute_sql(f"CREATE VIEW {qualified} AS\n{select}")
            created.append(view)
    return created
