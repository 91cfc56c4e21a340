"""The API's Prometheus metrics: request counters, a latency histogram per route, error
codes, client disconnects, predicted labels and low-confidence predictions, in Prometheus'
text format."""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter

from mnistlab.shipping.model import Prediction

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Counters and a latency histogram, rendered in Prometheus' text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.errors: Counter[tuple[str, str]] = Counter()
        self.disconnects: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        self.low_confidence = 0
        self.model_calls = 0  # a call classifies a batch: images / calls = the mean batch
        self.buckets: dict[str, list[int]] = {}
        self.sums: Counter[str] = Counter()
        self.started = time.time()

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, path, status)] += 1
            counts = self.buckets.setdefault(path, [0] * (len(BUCKETS) + 1))
            counts[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.sums[path] += seconds

    def error(self, path: str, code: str) -> None:
        with self._lock:
            self.errors[(path, code)] += 1

    def client_disconnect(self, path: str) -> None:
        """A client went away before its answer (counted with status 499 by the caller)."""
        with self._lock:
            self.disconnects[path] += 1

    def predictions(self, predictions: list[Prediction]) -> None:
        """One call of the model and the predictions it made."""
        with self._lock:
            self.model_calls += 1
            for p in predictions:
                self.labels[p.label] += 1
                self.low_confidence += p.low_confidence

    def render(self) -> str:
        def esc(value: str) -> str:
            return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

        with self._lock:
            lines = [
                "# HELP mnistlab_requests_total HTTP requests answered, by method, path, status.",
                "# TYPE mnistlab_requests_total counter",
            ]
            for (method, path, status), n in sorted(self.requests.items()):
                lines.append(
                    f'mnistlab_requests_total{{method="{method}",path="{esc(path)}",'
                    f'status="{status}"}} {n}'
                )
            lines += [
                "# HELP mnistlab_request_duration_seconds Time from request to response.",
                "# TYPE mnistlab_request_duration_seconds histogram",
            ]
            for path, counts in sorted(self.buckets.items()):
                running = 0
                for bound, n in zip((*BUCKETS, float("inf")), counts, strict=True):
                    running += n
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(
                        f'mnistlab_request_duration_seconds_bucket{{path="{esc(path)}",'
                        f'le="{le}"}} {running}'
                    )
                lines.append(
                    f'mnistlab_request_duration_seconds_sum{{path="{esc(path)}"}} '
                    f"{self.sums[path]:.6f}"
                )
                lines.append(
                    f'mnistlab_request_duration_seconds_count{{path="{esc(path)}"}} {running}'
                )
            lines += [
                "# HELP mnistlab_errors_total Requests answered with an error, by path and code.",
                "# TYPE mnistlab_errors_total counter",
            ]
            for (path, code), n in sorted(self.errors.items()):
                lines.append(f'mnistlab_errors_total{{path="{esc(path)}",code="{esc(code)}"}} {n}')
            lines += [
                "# HELP mnistlab_client_disconnects_total Clients gone before their answer "
                "(status 499 in mnistlab_requests_total), by path.",
                "# TYPE mnistlab_client_disconnects_total counter",
            ]
            for path, n in sorted(self.disconnects.items()):
                lines.append(f'mnistlab_client_disconnects_total{{path="{esc(path)}"}} {n}')
            lines += [
                "# HELP mnistlab_predictions_total Images classified, by predicted label.",
                "# TYPE mnistlab_predictions_total counter",
            ]
            for label, n in sorted(self.labels.items()):
                lines.append(f'mnistlab_predictions_total{{label="{esc(label)}"}} {n}')
            lines += [
                "# HELP mnistlab_model_calls_total Calls of the model; each classifies one "
                "request's images, or single images that arrived together (dynamic batching).",
                "# TYPE mnistlab_model_calls_total counter",
                f"mnistlab_model_calls_total {self.model_calls}",
                "# HELP mnistlab_low_confidence_total Predictions flagged low_confidence.",
                "# TYPE mnistlab_low_confidence_total counter",
                f"mnistlab_low_confidence_total {self.low_confidence}",
                "# HELP mnistlab_uptime_seconds Seconds since the app started.",
                "# TYPE mnistlab_uptime_seconds gauge",
                f"mnistlab_uptime_seconds {time.time() - self.started:.3f}",
            ]
        return "\n".join(lines) + "\n"
