"""Constants of the Twilio Conversations API and of this connector's defaults."""

import re

DEFAULT_BASE_URL = "https://conversations.twilio.com"

# Page sizes: Twilio's current spec caps Services at 100 and Users / User Conversations at 50;
# older documentation allowed up to 1000 and the server answers 20007 above that. We never
# compute pages from the size we asked for: we follow `meta.next_page_url` until it is null.
DEFAULT_PAGE_SIZE = 50
MIN_PAGE_SIZE = 1
MAX_PAGE_SIZE = 1000

# Twilio limits concurrent requests per account (the number is unpublished; ~100 is often
# quoted), shared with the customer's own traffic. 16 leaves most of it to that traffic while
# doing twice the work of 8 at Twilio's latency; more is a setting away (docs/performance.md,
# "Figures behind the code's choices").
DEFAULT_MAX_WORKERS = 16
# The bound is a guard against typos, not the account's limit: above that limit the adaptive
# limit (throttle.py) cuts the pool to 70 % once per burst of 429s, so a high setting costs a few
# retries, not a stalled run. 256 leaves room for accounts whose limit Twilio raised above the
# ~100 usually quoted, while each worker still costs one thread and one socket (256 stays well
# under the usual 1,024 open files) and `FETCH_AHEAD_PER_WORKER` queued users a worker.
MAX_MAX_WORKERS = 256

# Users whose fetch is submitted ahead of the results being written, per worker: the pool goes on
# fetching through a part's pause (its normalize and load, 2-4 s for 10,000 users) at ~10 users a
# second a worker at Twilio's ~100 ms a request. The results finished meanwhile wait in memory
# (docs/performance.md, "Figures behind the code's choices").
FETCH_AHEAD_PER_WORKER = 40

# Once a service's users are all submitted, the users decided so far are loaded as a part while
# the fetches still pending drain, if those are at least this many requests a worker: half a
# second at Twilio's ~100 ms, more than a part's own fixed cost (docs/performance.md, "Figures
# behind the code's choices").
DRAIN_ROUNDS = 5

# The user listing is read ahead of the fetches by at least this many users (at most one page
# more), so that its chain of page tokens goes on while a part of the run is normalized and
# loaded: 40 pages cover a pause of 4 s at Twilio's ~100 ms a page, for a few MB of records
# (docs/performance.md, "Figures behind the code's choices").
LISTING_READ_AHEAD = 2_000

# Retries: dlt's defaults (5 attempts, factor 1, no jitter) ride out only ~15 s without a
# Retry-After header. Ten attempts with jittered exponential backoff capped at 30 s give about
# 2.5 minutes of budget for one request, enough to outlast a burst of 429s on a busy account.
DEFAULT_REQUEST_MAX_ATTEMPTS = 10
DEFAULT_REQUEST_BACKOFF_FACTOR = 0.5
DEFAULT_REQUEST_MAX_RETRY_DELAY = 30.0
DEFAULT_REQUEST_TIMEOUT = 60.0

SERVICES_PATH = "/v1/Services"
USERS_PATH = "/v1/Services/{service_sid}/Users"
USER_PATH = "/v1/Services/{service_sid}/Users/{user}"
USER_CONVERSATIONS_PATH = "/v1/Services/{service_sid}/Users/{user}/Conversations"
CONVERSATIONS_PATH = "/v1/Services/{service_sid}/Conversations"
# The spec caps this list's PageSize at 100 (the user lists take up to 1000).
CONVERSATIONS_MAX_PAGE_SIZE = 100

# Keys of the list in each list response (`meta.key` says the same).
SERVICES_KEY = "services"
USERS_KEY = "users"
USER_CONVERSATIONS_KEY = "conversations"
CONVERSATIONS_KEY = "conversations"

# Twilio SIDs: two upper-case letters and 32 lower-case hex digits.
SERVICE_SID_PATTERN = re.compile(r"^IS[0-9a-f]{32}$")
USER_SID_PATTERN = re.compile(r"^US[0-9a-f]{32}$")
ACCOUNT_SID_PATTERN = re.compile(r"^AC[0-9a-f]{32}$")
API_KEY_SID_PATTERN = re.compile(r"^SK[0-9a-f]{32}$")
# Anything that starts like a SID and has SID length is meant as one: a malformed SID is rejected
# instead of being sent as an identity.
SID_LOOKALIKE_PATTERN = re.compile(r"^[A-Z]{2}[0-9A-Za-z]{32}$")
MAX_IDENTITY_LENGTH = 256

# Column holding the hard-delete flag on tombstone rows (see changes.py).
DELETED_COLUMN = "_deleted"

# Rows of changed users are buffered and handed to dlt as pyarrow tables of about this size:
# large enough that per-table overhead vanishes, small enough to keep memory flat
# (docs/performance.md, "Figures behind the code's choices").
ARROW_BATCH_ROWS = 5_000
