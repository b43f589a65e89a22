"""An OpenAI-compatible chat endpoint on 127.0.0.1 for tests, with scripted HTTP statuses."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ChatServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 with scripted status codes."""

    def __init__(self, script: list[int]) -> None:
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, self.headers.get("Authorization"), body))
                status = outer.script.pop(0) if outer.script else 200
                if status == 200:
                    question = body["messages"][-1]["content"]
                    payload = {"choices": [{"message": {"role": "assistant",
                                                        "content": f"Label: echo {len(question)}"}}]}
                elif status == 299:  # 200 with a body that is not a chat completion
                    status, payload = 200, {"unexpected": True}
                else:
                    payload = {"error": "scripted"}
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
