// Greedy decode by token ids with llama.cpp, for tools/llama_cpp_peer.sh.
//
//   llama-greedy-ids MODEL.gguf N_GEN THREADS ID [ID ...]
//
// Decodes the prompt ids in one batch, then N_GEN times takes the argmax of the
// last position's logits (ties go to the lowest id) and feeds it back.
// Prints the generated ids on one line of stdout, space-separated. No tokenizer and no
// sampler: the comparison is on ids.
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static int fail(const char * msg) {
    std::fprintf(stderr, "llama-greedy-ids: error: %s\n", msg);
    return 1;
}

int main(int argc, char ** argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s MODEL.gguf N_GEN THREADS ID [ID ...]\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const int n_gen = std::atoi(argv[2]);
    const int threads = std::atoi(argv[3]);
    if (n_gen < 1 || threads < 1) {
        return fail("N_GEN and THREADS must be positive");
    }
    std::vector<llama_token> prompt;
    for (int i = 4; i < argc; i++) {
        char * end = nullptr;
        const long id = std::strtol(argv[i], &end, 10);
        if (*argv[i] == '\0' || *end != '\0' || id < 0) {
            return fail((std::string("not a token id: ") + argv[i]).c_str());
        }
        prompt.push_back((llama_token) id);
    }

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model * model = llama_model_load_from_file(path, mp);
    if (!model) {
        return fail("could not load the model");
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    for (llama_token id : prompt) {
        if (id >= n_vocab) {
            return fail("a prompt id is not below the vocabulary size");
        }
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t) (prompt.size() + n_gen + 8);
    cp.n_batch = (uint32_t) prompt.size();
    cp.n_ubatch = (uint32_t) prompt.size();
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        return fail("could not create the context");
    }

    std::vector<llama_token> out;
    llama_token next = 0;
    llama_batch batch = llama_batch_get_one(prompt.data(), (int32_t) prompt.size());
    for (int i = 0; i < n_gen; i++) {
        if (llama_decode(ctx, batch) != 0) {
            return fail("llama_decode failed");
        }
        const float * logits = llama_get_logits_ith(ctx, -1);
        if (!logits) {
            return fail("no logits");
        }
        int best = 0;
        for (int v = 1; v < n_vocab; v++) {
            if (logits[v] > logits[best]) {
                best = v;
            }
        }
        next = (llama_token) best;
        out.push_back(next);
        batch = llama_batch_get_one(&next, 1);
    }
    for (size_t i = 0; i < out.size(); i++) {
        std::printf(i ? " %d" : "%d", out[i]);
    }
    std::printf("\n");

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
