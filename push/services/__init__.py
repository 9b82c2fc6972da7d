"""Push services, by noun: every face (admin, API, commands, the Kazoo adapter) calls these.

- `apps`: push apps; `credentials`: their secrets; `appcache`: the apps as the push path reads them;
- `policy`: a push_req's validation, deadline, app choice and retry policy (pure decisions);
- `clients`: provider credentials and requests, one send for callers on an event loop, the warm-up;
- `deliveries`: the delivery log (claims, leases, outcomes, in batches);
- `sending`: the attempt loop every sender shares, and what an answer means afterwards;
- `notify`: test pushes and Kamailio's push-notifications-role;
- `retention`: the delivery log, dead devices and tokens aged out in batches.

The names below are the public operations, re-exported so a face imports `push.services`.
"""

from push.services.appcache import push_app_cache_clear, push_app_get
from push.services.apps import (
    APNS_PRODUCTION_HOST,
    APNS_SANDBOX_HOST,
    PUSH_APP_EDITABLE,
    PUSH_APP_SETTINGS,
    PushAppAdded,
    push_app_add,
    push_app_address,
    push_app_delete,
    push_app_update,
    push_app_upsert,
    push_app_warnings,
)
from push.services.clients import WarmUp, provider_connections_warm
from push.services.credentials import (
    CREDENTIAL_KINDS_OF_PROVIDER,
    credential_create,
    credential_delete,
    credential_get_or_save,
    credential_kind_check,
    credential_name_for,
    credential_parse,
    credential_provider_check,
    credential_save,
    credential_update,
    credentials_reencrypt,
)
from push.services.deliveries import delivery_outcome_text
from push.services.notify import (
    NOTIFY_INCOMING_CALL,
    NOTIFY_KINDS,
    NOTIFY_MISSED_CALL,
    TEST_PUSH_CALLER_NAME,
    TEST_PUSH_CALLER_NUMBER,
    Notification,
    push_app_test_send,
    push_notify,
    push_notify_aor,
    push_request_handle_in_scope,
    push_test_send,
)
from push.services.policy import PROVIDER_OF_TOKEN_TYPE, PushJob, SendResult
from push.services.retention import (
    PRUNE_BATCH_DEFAULT,
    PRUNE_REST_DEFAULT,
    PruneRunning,
    PruneSummary,
    retention_prune,
)
from push.services.sending import push_request_handle, token_dead

__all__ = [
    "APNS_PRODUCTION_HOST", "APNS_SANDBOX_HOST", "CREDENTIAL_KINDS_OF_PROVIDER", "NOTIFY_INCOMING_CALL",
    "NOTIFY_KINDS", "NOTIFY_MISSED_CALL", "PROVIDER_OF_TOKEN_TYPE", "PRUNE_BATCH_DEFAULT", "PRUNE_REST_DEFAULT",
    "PUSH_APP_EDITABLE", "PUSH_APP_SETTINGS", "TEST_PUSH_CALLER_NAME", "TEST_PUSH_CALLER_NUMBER", "Notification",
    "PruneRunning", "PruneSummary", "PushAppAdded", "PushJob", "SendResult", "WarmUp",
    "credential_create", "credential_delete", "credential_get_or_save", "credential_kind_check", "credential_name_for",
    "credential_parse", "credential_provider_check", "credential_save", "credential_update", "credentials_reencrypt",
    "delivery_outcome_text", "push_app_add", "push_app_address", "push_app_cache_clear", "push_app_delete",
    "push_app_get", "push_app_test_send", "push_app_update", "push_app_upsert", "push_app_warnings", "push_notify",
    "push_notify_aor", "provider_connections_warm", "push_request_handle", "push_request_handle_in_scope",
    "push_test_send", "retention_prune", "token_dead",
]
