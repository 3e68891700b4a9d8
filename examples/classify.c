/* classify.c: a compiled refexit model inside a C program (no Python at run time).
 *
 *   refexit compile MODEL_DIR -o build/m --prefix sst2 --policy entropy --threshold 0.3
 *   make -C examples MODEL_DIR=$PWD/build/m PREFIX=sst2
 *   examples/classify build/m/sst2.weights "a gripping, beautifully shot film" "dull"
 *
 * or, without make (the generated sst2.c is the whole library: model, tokenizer, text API):
 *
 *   cc -O2 -std=c99 -Wall -Wextra -iquote build/m -DPREFIX=sst2 examples/classify.c build/m/sst2.c -o classify -lm
 *
 * (add -fopenmp to use several threads inside a call, see <prefix>_set_threads.)
 *
 * Every generated symbol starts with the model's prefix, so several models can live in one
 * program. This file is written once for any prefix: API(open) below is sst2_open when PREFIX
 * is sst2. In your own program you would simply write #include "sst2.h" and sst2_open(...).
 *
 * It prints one line per text:  label probability exit_layer/num_layers tokens  text
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PREFIX
#define PREFIX model
#endif
#define STR_(x) #x
#define STR(x) STR_(x)
#define PASTE_(a, b) a##_##b
#define PASTE(a, b) PASTE_(a, b)
#define API(name) PASTE(PREFIX, name)

#include STR(PREFIX.h)                  /* e.g. "sst2.h" */

int main(int argc, char **argv) {
    API(model) *m = NULL;
    int status;
    if (argc < 3) {
        fprintf(stderr, "usage: %s WEIGHTS TEXT...\n", argv[0]);
        return 2;
    }
    /* Map the weights file read-only and check it (magic, version, model hash, checksum); the
       tokenizer is built from the vocabulary stored in it. One handle per thread. */
    status = API(open)(argv[1], &m);
    if (status != 0) {
        fprintf(stderr, "%s: %s\n", argv[1], API(strerror)(status));
        return 1;
    }
    int n_labels = API(num_labels)(m), max_len = API(max_length)(m);
    int32_t *ids = malloc((size_t)max_len * sizeof *ids);
    int32_t *type_ids = malloc((size_t)max_len * sizeof *type_ids);
    if (!ids || !type_ids) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        int n = 0;
        API(result) res;
        /* Text -> [CLS] word pieces [SEP], truncated to the model's maximum length (0). */
        status = API(tokenize)(m, argv[i], strlen(argv[i]), NULL, 0, 0, ids, type_ids, max_len, &n);
        /* ... then classify; API(classify_text)(m, text, len, &res) does both in one call. */
        if (status == 0)
            status = API(classify)(m, ids, type_ids, n, &res);
        if (status != 0) {
            fprintf(stderr, "%s: %s\n", argv[i], API(strerror)(status));
            API(close)(m);
            return 1;
        }
        /* probability of the predicted label: softmax of the exit layer's logits */
        double sum = 0.0;
        for (int c = 0; c < n_labels; c++)
            sum += exp((double)res.logits[c] - res.logits[res.label]);
        printf("%s %.4f %d/%d %d %s\n", API(label_name)(m, res.label), 1.0 / sum, (int)res.exit_layer,
               API(num_layers)(m), n, argv[i]);
    }
    free(ids);
    free(type_ids);
    API(close)(m);
    return 0;
}
