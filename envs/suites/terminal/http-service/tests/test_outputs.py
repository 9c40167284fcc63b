import time
import urllib.request


def fetch() -> bytes:
    with urllib.request.urlopen("http://127.0.0.1:8080/index.html", timeout=5) as response:
        assert response.status == 200
        return response.read()


def test_page_is_served():
    deadline = time.monotonic() + 10  # serve.sh was just started: give it time to listen
    while True:
        try:
            body = fetch()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert b"agentsd service task" in body
