"""An OpenAI-compatible chat endpoint on 127.0.0.1 for tests, with scripted HTTP statuses.

Error bodies echo the Authorization header received (as careless servers do); ``redirect_to`` makes every
request answer 307 to that base URL plus the same path."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 with scripted status codes; ``requests`` holds
    (path, Authorization header or None, JSON body) per request received."""

    def __init__(self, script: list[int], redirect_to: str | None = None) -> None:
        self.script, self.redirect_to = list(script), redirect_to
        self.requests: list[tuple[str, str | None, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                outer.requests.append((self.path, auth, body))
                if outer.redirect_to:
                    self.send_response(307)
                    self.send_header("Location", outer.redirect_to.removesuffix("/v1") + self.path)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = outer.script.pop(0) if outer.script else 200
                if status == 200:
                    question = body["messages"][-1]["content"]
                    payload = {"choices": [{"message": {"role": "assistant",
                                                        "content": f"Label: echo {len(question)}"}}]}
                elif status == 299:  # 200 with a body that is not a chat completion
                    status, payload = 200, {"unexpected": True}
                else:
                    payload = {"error": f"scripted; you sent Authorization {auth}"}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
