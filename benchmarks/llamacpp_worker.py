"""llama.cpp reference worker: run by a separate Python that has llama-cpp-python (not a dependency).

Reads JSON lines `{"ids": [...], "max_tokens": N}` on stdin and answers each with
`{"ids": [...], "text": "...", "ms": ..., "first_ms": ...}` (time to the first token): greedy decoding of the same prompt token ids
until the end of the line. llama.cpp keeps the KV cache of the previous prompt and reuses
its longest common prefix, as llama.vscode's server does.

    python3 -m venv /tmp/llamacpp-venv
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF" \\
        /tmp/llamacpp-venv/bin/pip install llama-cpp-python==0.3.36

(-DGGML_AVX512=ON where the CPU has AVX-512; a build with it dies with SIGILL on one without.)
"""

import json
import sys
import time

from llama_cpp import Llama


def main() -> None:
    llm = Llama(model_path=sys.argv[1], n_ctx=4096, n_threads=int(sys.argv[2]), verbose=False)
    eos = llm.token_eos()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        t = time.perf_counter()
        out: list[int] = []
        text = b""
        first = None
        for tok in llm.generate(req["ids"], top_k=1, temp=0.0, reset=True):
            first = first or time.perf_counter()
            if tok == eos or len(out) >= req["max_tokens"]:
                break
            out.append(tok)
            text += llm.detokenize([tok])
            if b"\n" in text:
                break
        end = time.perf_counter()
        ans = {"ids": out, "text": text.decode("utf-8", errors="ignore"), "ms": (end - t) * 1000,
               "first_ms": ((first or end) - t) * 1000}
        print(json.dumps(ans), flush=True)


if __name__ == "__main__":
    main()
