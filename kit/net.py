"""Is a service there at all? Asked once, with a short timeout, before a client's minute of retries.

Without a network, huggingface_hub spends ~46 s in retries and the kaggle client retries its calls with
backoff before either says so; a HEAD request that gets any answer within a few seconds (even an error
status) proves the service is reachable, and no answer is said in one line at once.
"""
import requests

PROBE_S = 2.0  # seconds to connect, then seconds to wait for an answer: under 5 s in all


def unreachable(url: str) -> str | None:
    """Why `url` gave no answer within ~2 x PROBE_S ("connection failed: ConnectionError", "no answer:
    ReadTimeout"); None when it answered anything."""
    try:
        requests.head(url, timeout=(PROBE_S, PROBE_S), allow_redirects=False)
    except requests.RequestException as e:
        kind = "no answer" if isinstance(e, requests.Timeout) else "connection failed"
        return f"{kind}: {type(e).__name__}"
    return None
