import collections, time, traceback, json
import pytest
from django.db import transaction
from hypothesis import given, settings, HealthCheck, strategies as st
from pusher_site.errors import BadMessage
from pusher_site.messages import RawMessage, message_process
from tests.reliability import strategies as s

pytestmark = pytest.mark.django_db
FOUND = collections.defaultdict(list)

def run(body):
    try:
        with transaction.atomic():
            message_process(RawMessage(body=body, received_at=time.time()))
    except BadMessage:
        pass
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)
        where = [f"{f.filename.split('/main/')[-1]}:{f.lineno}:{f.name}" for f in tb if '.venv' not in f.filename and 'pyenv' not in f.filename][-1]
        key = (type(e).__name__, where, str(e)[:90])
        FOUND[key].append(body[:600])

P = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)

@P
@given(fields=s.push_req_fields())
def test_push(apple_app, firebase_app, fields):
    run(s.encode(fields))

@P
@given(fields=s.reg_success_fields())
def test_reg(rules, fields):
    run(s.encode(fields))

@P
@given(fields=st.dictionaries(s.hostile_text(), s.json_values(), max_size=6),
       event=st.sampled_from([None, ("directory", "reg_success"), ("notification", "push_req")]))
def test_any(rules, fields, event):
    if event: fields["Event-Category"], fields["Event-Name"] = event
    run(s.encode(fields))

def test_zz_report(capsys):
    with capsys.disabled():
        for key, bodies in FOUND.items():
            print("\n==", len(bodies), key)
            for b in sorted(bodies, key=len)[:2]:
                print("   ", b[:400])
