"""A local model of Dub's conversion-tracking API: its schemas (`schemas`) and its behaviour (`model`)."""

from __future__ import annotations

from adapter.dubsim.model import Commission, Customer, DubModel, Lead, Sale, Workspace
from adapter.dubsim.schemas import COMMISSION_STATUSES, PAYMENT_PROCESSORS, DubError, js_len, js_stringify

__all__ = ["COMMISSION_STATUSES", "PAYMENT_PROCESSORS", "Commission", "Customer", "DubError", "DubModel", "Lead",
           "Sale", "Workspace", "js_len", "js_stringify"]
