import time
from tests.api.test_history_api import bulk_accrue, full_history, EMAIL

def test_t(api, rt, admin_token):
    api.member(EMAIL)
    t = time.time()
    bulk_accrue(rt, admin_token, EMAIL, 500)
    t1 = time.time()
    full_history(api)
    print("\nbulk", t1 - t, "walk", time.time() - t1)
