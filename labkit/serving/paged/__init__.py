"""labkit's paged KV engine, from scratch: the pieces vLLM is made of, one file each (after nano-vllm).

    sequence    Sequence: a request's tokens, its block table, how many of its tokens are computed
    blocks      BlockManager: fixed-size KV blocks, a free list, reference counts, prefix caching by block hash
    scheduler   Scheduler: admission by KV capacity, recompute preemption, chunked prefill under a token budget
    attention   paged attention for transformers models: write new K/V into slots, gather by block table, SDPA
    runner      ModelRunner: the KV pool and one forward over a step's packed tokens
    onnx_layers a Llama forward step as one ONNX graph, the KV cache outside it (past in, present out)
    ort_runner  OrtRunner: ModelRunner whose steps run that graph in ONNX Runtime (CPU, fp32)
    offline     generate_offline: the engine without a server (greedy, one prompt), for timing it alone

`labkit.serving.paged_engine.PagedEngine` puts them behind the server's Engine interface (scheduler "paged").
"""
