"""A local emulator of Twilio's Conversations API (v1) for tests, demos and benchmarks.

It serves services, users, user conversations, and conversations with their participants and
messages (and their default-service twins), plus the writes Twilio has that change them, with
Twilio's paging, error bodies, authentication and headers, over deterministic generated data.
Faults (429, 503, dropped connections, broken bodies) and latency can be injected reproducibly,
and Twilio's account-wide limit on concurrent requests (429 / 20429) can be modelled. It can
serve several accounts (a parent and its subaccounts), each with its own credentials and data.

    from twilio_emulator import EmulatorConfig, DataSpec, run_emulator

    with run_emulator(EmulatorConfig(data=DataSpec(seed=7))) as emu:
        print(emu.base_url, emu.account_sid)

See docs/emulator.md.
"""

from .accounts import Account, AccountPlan, plan_accounts
from .config import (
    DEMO_ACCOUNT_SID,
    DEMO_API_KEY_SECRET,
    DEMO_API_KEY_SID,
    DEMO_AUTH_TOKEN,
    DataSpec,
    EmulatorConfig,
    PageSizePolicy,
)
from .errors import TwilioError
from .faults import FaultController, FaultKind
from .gate import RequestGate
from .model import Message, ParticipantView
from .server import Emulator, run_emulator
from .stats import Stats, StatsSnapshot
from .store import PostedMessage, Store

__all__ = [
    "Account",
    "AccountPlan",
    "DEMO_ACCOUNT_SID",
    "DEMO_API_KEY_SECRET",
    "DEMO_API_KEY_SID",
    "DEMO_AUTH_TOKEN",
    "DataSpec",
    "Emulator",
    "EmulatorConfig",
    "FaultController",
    "FaultKind",
    "Message",
    "PageSizePolicy",
    "ParticipantView",
    "PostedMessage",
    "RequestGate",
    "Stats",
    "StatsSnapshot",
    "Store",
    "TwilioError",
    "plan_accounts",
    "run_emulator",
]
