from __future__ import annotations

import json

from tests.conftest import post_stripe, wait_for


def test_smoke(client, receiver):
    from pathlib import Path
    body = json.loads(Path("providers/samples/stripe/checkout.session.completed.json").read_text())
    r = post_stripe(client, body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "accepted"
    wait_for(lambda: receiver.delivered())
    assert receiver.delivered()[0].body["amount"] == 4900
