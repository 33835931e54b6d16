"""`make load`'s live line: rates between two scrapes of the API's /metrics, redrawn on a
terminal, a line now and then in a log."""

from __future__ import annotations

import io
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "load"))

from live import LiveLine, Sample, describe, parse  # noqa: E402

TEXT = """# TYPE rushorder_http_requests counter
rushorder_http_requests_total{{method="POST",route="/api/v1/orders",status="201"}} {ok}
rushorder_http_requests_total{{method="POST",route="/api/v1/orders",status="409"}} {refused}
rushorder_http_requests_total{{method="POST",route="/api/v1/orders",status="503"}} {errors}
# TYPE rushorder_orders_placed counter
rushorder_orders_placed_total {ok}
# TYPE rushorder_orders_rejected counter
rushorder_orders_rejected_total{{code="OUT_OF_STOCK"}} {refused}
"""


def test_the_line_gives_the_rates_between_two_samples() -> None:
    before = parse(TEXT.format(ok=100, refused=10, errors=0), at=10.0)
    after = parse(TEXT.format(ok=300, refused=50, errors=2), at=12.0)
    assert after == Sample(12.0, 352, 2, 300, {"OUT_OF_STOCK": 50})
    assert describe(before, after, started=0.0) == (
        "load   12s: 121 requests/s, 100 orders/s, refused 20/s (OUT_OF_STOCK 20), 5xx 1/s")


class Growing(BaseHTTPRequestHandler):
    """/metrics whose counters grow by 100 orders at every scrape."""

    scrapes = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        Growing.scrapes += 1
        body = TEXT.format(ok=100 * Growing.scrapes, refused=Growing.scrapes, errors=0).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_in_a_log_it_writes_a_line_now_and_then_and_on_a_terminal_redraws_one() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Growing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for terminal in (False, True):
            out = io.StringIO()
            live = LiveLine(host, stream=out, terminal=terminal, every_s=0.1, line_every_s=0.35)
            live.start()
            time.sleep(1.2)
            live.finish()
            text = out.getvalue()
            if terminal:
                assert text.count("\r") >= 5 and text.endswith("\n") and text.count("\n") == 1
            else:
                assert 2 <= text.count("\n") <= 4 and "\r" not in text
            assert "orders/s" in text and "OUT_OF_STOCK" in text
    finally:
        server.shutdown()
        server.server_close()
