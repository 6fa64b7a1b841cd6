/* The detector's per-character loops, compiled: they are what Python could not run at zlib speed.
 *
 * Each function is the exact counterpart of the Python it replaced (core/policy/detect.py keeps the
 * rules and the thresholds; this file only walks characters):
 *   ngram_counts(text | token_ids) -> (tokens, distinct_1, .., distinct_4)
 *       tokens as detect._TOKEN splits them: a CJK character, a \w+ run, or one other non-space.
 *   drift_runs(text, cutoff, max_unit, min_units) -> [(first, last, start, end, similarity, period,
 *       all_same, cut_after, [unit_start, unit_end, ...]), ...]
 *       units as detect._SEGMENT_END cuts them, numbers masked as detect._AMOUNT.sub("0", u).strip(),
 *       each unit's best Indel similarity (>= cutoff) to one of the 4 before it or to the last that
 *       opened with the same 12 characters, and the runs of such units.
 *   novelty(units, period, warm) -> (word, sequence, number novelty), as detect._novelty.
 * Characters are classified by CPython's own tables (Py_UNICODE_ISALNUM is re's \w, ISSPACE its \s,
 * ISDECIMAL its \d), so the split is the one the regexes made. Distinct n-grams, numbers and word
 * sequences are counted by 64-bit hashes (a collision among a million keys: ~1e-8).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef Py_UCS4 ch_t;

static inline uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline uint64_t hash_chars(const ch_t *s, Py_ssize_t n) {
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)n;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ULL;
    return mix(h);
}

/* ------------------------------------------------------------------ a set of 64-bit hashes */

typedef struct { uint64_t *slot; size_t mask, used; } hset;

static int hset_init(hset *s, size_t expected) {
    size_t cap = 64;
    while (cap < 2 * expected + 2) cap <<= 1;
    s->slot = calloc(cap, sizeof(uint64_t));
    s->mask = cap - 1;
    s->used = 0;
    return s->slot ? 0 : -1;
}

static void hset_free(hset *s) { free(s->slot); s->slot = NULL; }

static int hset_grow(hset *s) {
    size_t cap = (s->mask + 1) * 2;
    uint64_t *old = s->slot, *slot = calloc(cap, sizeof(uint64_t));
    if (!slot) return -1;
    for (size_t i = 0; i <= s->mask; i++) {
        if (!old[i]) continue;
        size_t j = old[i] & (cap - 1);
        while (slot[j]) j = (j + 1) & (cap - 1);
        slot[j] = old[i];
    }
    free(old);
    s->slot = slot;
    s->mask = cap - 1;
    return 0;
}

/* Adds h; returns 1 if it was new, 0 if seen, -1 on no memory. */
static int hset_add(hset *s, uint64_t h) {
    if (!h) h = 1;
    if (2 * (s->used + 1) > s->mask + 1 && hset_grow(s) < 0) return -1;
    size_t j = h & s->mask;
    while (s->slot[j]) {
        if (s->slot[j] == h) return 0;
        j = (j + 1) & s->mask;
    }
    s->slot[j] = h;
    s->used++;
    return 1;
}

static int hset_has(const hset *s, uint64_t h) {
    if (!h) h = 1;
    size_t j = h & s->mask;
    while (s->slot[j]) {
        if (s->slot[j] == h) return 1;
        j = (j + 1) & s->mask;
    }
    return 0;
}

/* Distinct values among h[0..n) (h is reordered). Large inputs are first split by their top bits
 * into buckets that fit in the cache, so the time stays linear in n: one hash set over a text of
 * megabytes would miss the cache on every probe. -1 on no memory. */
static Py_ssize_t count_distinct(uint64_t *h, Py_ssize_t n) {
    enum { SMALL = 1 << 14 };
    hset set;  /* small inputs */
    if (n <= SMALL) {
        if (hset_init(&set, n) < 0) return -1;
        Py_ssize_t d = 0;
        for (Py_ssize_t i = 0; i < n; i++) d += hset_add(&set, h[i]);
        hset_free(&set);
        return d;
    }
    int bits = 1;
    while (((Py_ssize_t)1 << bits) * (SMALL / 4) < n && bits < 16) bits++;
    size_t buckets = (size_t)1 << bits;
    Py_ssize_t *start = calloc(buckets + 1, sizeof(Py_ssize_t)), *fill = calloc(buckets, sizeof(Py_ssize_t));
    uint64_t *out = malloc(sizeof(uint64_t) * n);
    Py_ssize_t d = -1;
    if (!start || !fill || !out) goto end;
    for (Py_ssize_t i = 0; i < n; i++) start[(h[i] >> (64 - bits)) + 1]++;
    Py_ssize_t widest = 0;
    for (size_t b = 0; b < buckets; b++) {
        if (start[b + 1] > widest) widest = start[b + 1];
        start[b + 1] += start[b];
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t b = h[i] >> (64 - bits);
        out[start[b] + fill[b]++] = h[i];
    }
    /* one table for all buckets; a slot belongs to the bucket that stamped it, so none is cleared */
    size_t cap = 64;
    while (cap < 2 * (size_t)widest + 2) cap <<= 1;
    uint64_t *key = malloc(sizeof(uint64_t) * cap);
    uint32_t *stamp = calloc(cap, sizeof(uint32_t));
    if (key && stamp) {
        d = 0;
        for (size_t b = 0; b < buckets; b++) {
            uint32_t epoch = (uint32_t)b + 1;
            for (Py_ssize_t i = start[b]; i < start[b + 1]; i++) {
                size_t j = out[i] & (cap - 1);
                while (stamp[j] == epoch && key[j] != out[i]) j = (j + 1) & (cap - 1);
                if (stamp[j] != epoch) { stamp[j] = epoch; key[j] = out[i]; d++; }
            }
        }
    }
    free(key);
    free(stamp);
end:
    free(start);
    free(fill);
    free(out);
    return d;
}

static ch_t *ucs4(PyObject *text, Py_ssize_t *n) {
    *n = PyUnicode_GET_LENGTH(text);
    return PyUnicode_AsUCS4Copy(text);  /* sets MemoryError on failure */
}

/* ------------------------------------------------------------------ character classes */

enum { C_WORD = 1, C_SPACE = 2, C_DECIMAL = 4, C_DIGIT = 8, C_LETTER = 16 };
static unsigned char latin1[256];  /* the classes of U+0000-U+00FF, from CPython's functions at import */

static unsigned char classify(ch_t c) {
    int alnum = Py_UNICODE_ISALNUM(c), decimal = Py_UNICODE_ISDECIMAL(c);
    return (unsigned char)(((c == '_' || alnum) ? C_WORD : 0) | (Py_UNICODE_ISSPACE(c) ? C_SPACE : 0) |
                           (decimal ? C_DECIMAL : 0) | (Py_UNICODE_ISDIGIT(c) ? C_DIGIT : 0) |
                           ((c != '_' && alnum && !decimal) ? C_LETTER : 0));
}

static inline int has(ch_t c, unsigned char cls) { return (c < 256 ? latin1[c] : classify(c)) & cls; }

#define IS_WORD(c) has((c), C_WORD)        /* re's \w */
#define IS_SPACE(c) has((c), C_SPACE)      /* re's \s, str.isspace */
#define IS_DECIMAL(c) has((c), C_DECIMAL)  /* re's \d */
#define IS_LETTER(c) has((c), C_LETTER)    /* [^\W\d_] */

/* ------------------------------------------------------------------ ngram_counts */

static inline int is_cjk(ch_t c) {
    return (c >= 0x2e80 && c <= 0x9fff) || (c >= 0xac00 && c <= 0xd7af) || (c >= 0x20000 && c <= 0x2ffff);
}


/* Token hashes of a text as detect._TOKEN finds them. */
static uint64_t *text_tokens(const ch_t *u, Py_ssize_t n, Py_ssize_t *count) {
    uint64_t *tok = malloc(sizeof(uint64_t) * (n + 1));
    Py_ssize_t k = 0, i = 0;
    if (!tok) return NULL;
    while (i < n) {
        ch_t c = u[i];
        if (is_cjk(c)) {
            tok[k++] = hash_chars(u + i, 1);
            i++;
        } else if (IS_WORD(c)) {
            Py_ssize_t j = i + 1;
            while (j < n && IS_WORD(u[j])) j++;  /* \w+ is greedy: CJK after letters joins the run */
            tok[k++] = hash_chars(u + i, j - i);
            i = j;
        } else if (!IS_SPACE(c)) {
            tok[k++] = hash_chars(u + i, 1);
            i++;
        } else {
            i++;
        }
    }
    *count = k;
    return tok;
}

static PyObject *ngram_counts(PyObject *self, PyObject *arg) {
    Py_ssize_t count = 0;
    uint64_t *tok = NULL;
    if (PyUnicode_Check(arg)) {
        Py_ssize_t n;
        ch_t *u = ucs4(arg, &n);
        if (!u) return NULL;
        tok = text_tokens(u, n, &count);
        PyMem_Free(u);
    } else {
        PyObject *seq = PySequence_Fast(arg, "ngram_counts takes a str or a sequence of token ids");
        if (!seq) return NULL;
        count = PySequence_Fast_GET_SIZE(seq);
        tok = malloc(sizeof(uint64_t) * (count + 1));
        for (Py_ssize_t i = 0; tok && i < count; i++) {
            long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
            if (v == -1 && PyErr_Occurred()) { free(tok); Py_DECREF(seq); return NULL; }
            tok[i] = mix((uint64_t)v ^ 0x5bd1e995ULL);
        }
        Py_DECREF(seq);
    }
    if (!tok) return PyErr_NoMemory();
    Py_ssize_t distinct[4] = {0, 0, 0, 0};
    uint64_t *grams = malloc(sizeof(uint64_t) * (count + 1));
    int ok = grams != NULL;
    for (int g = 0; ok && g < 4; g++) {  /* the g+1-grams' hashes, counted one length at a time */
        Py_ssize_t m = count - g;
        for (Py_ssize_t i = 0; i < m; i++) {
            uint64_t h = 0;
            for (int q = 0; q <= g; q++) h = mix(h * 0x9e3779b97f4a7c15ULL + tok[i + q] + (uint64_t)q);
            grams[i] = h;
        }
        Py_ssize_t d = m > 0 ? count_distinct(grams, m) : 0;
        if (d < 0) ok = 0;
        distinct[g] = d;
    }
    free(grams);
    free(tok);
    if (!ok) return PyErr_NoMemory();
    return Py_BuildValue("nnnnn", count, distinct[0], distinct[1], distinct[2], distinct[3]);
}

/* ------------------------------------------------------------------ Indel similarity (bit-parallel LCS) */

typedef struct {
    uint64_t *ascii;   /* 256 x words */
    ch_t *keys;        /* open addressing: code points >= 256 */
    uint64_t *wide;    /* their masks, cap x words */
    size_t cap;
    Py_ssize_t words;
    uint64_t *row;     /* the LCS state, words */
    size_t *used;      /* slots of keys this pattern set, to clear */
    size_t nused;
} lcs_t;

static int lcs_init(lcs_t *L, Py_ssize_t max_len) {
    L->words = (max_len + 63) / 64 + 1;
    L->cap = 64;
    while (L->cap < 2 * (size_t)max_len + 2) L->cap <<= 1;
    L->ascii = calloc(256 * L->words, sizeof(uint64_t));
    L->keys = calloc(L->cap, sizeof(ch_t));
    L->wide = calloc(L->cap * L->words, sizeof(uint64_t));
    L->row = calloc(L->words, sizeof(uint64_t));
    L->used = calloc(max_len + 1, sizeof(size_t));
    L->nused = 0;
    return (L->ascii && L->keys && L->wide && L->row && L->used) ? 0 : -1;
}

static void lcs_free(lcs_t *L) { free(L->ascii); free(L->keys); free(L->wide); free(L->row); free(L->used); }

static uint64_t *lcs_mask(lcs_t *L, ch_t c, int create) {
    if (c < 256) return L->ascii + (size_t)c * L->words;
    size_t j = (c * 2654435761u) & (L->cap - 1);
    while (L->keys[j] && L->keys[j] != c) j = (j + 1) & (L->cap - 1);
    if (!L->keys[j]) {
        if (!create) return NULL;
        L->keys[j] = c;
        L->used[L->nused++] = j;
    }
    return L->wide + j * L->words;
}

/* Set the pattern p (its masks): built once, compared with several texts. */
static void lcs_build(lcs_t *L, const ch_t *p, Py_ssize_t lp) {
    for (Py_ssize_t i = 0; i < lp; i++) lcs_mask(L, p[i], 1)[i >> 6] |= 1ULL << (i & 63);
}

static void lcs_clear(lcs_t *L, const ch_t *p, Py_ssize_t lp) {
    Py_ssize_t words = (lp + 63) / 64;
    for (Py_ssize_t i = 0; i < lp; i++)
        if (p[i] < 256) memset(L->ascii + (size_t)p[i] * L->words, 0, sizeof(uint64_t) * words);
    for (size_t q = 0; q < L->nused; q++) {
        memset(L->wide + L->used[q] * L->words, 0, sizeof(uint64_t) * words);
        L->keys[L->used[q]] = 0;
    }
    L->nused = 0;
}

/* Length of the longest common subsequence of the built pattern (lp) and t (Hyyro's bit-parallel algorithm). */
static Py_ssize_t lcs_run(lcs_t *L, Py_ssize_t lp, const ch_t *t, Py_ssize_t lt) {
    Py_ssize_t words = (lp + 63) / 64, zeros = 0;
    uint64_t last = (lp & 63) ? (1ULL << (lp & 63)) - 1 : ~0ULL;
    if (words == 1) {  /* a unit of up to 64 characters: one machine word */
        uint64_t row = ~0ULL;
        for (Py_ssize_t i = 0; i < lt; i++) {
            uint64_t *m = lcs_mask(L, t[i], 0);
            if (!m) continue;
            uint64_t u = row & m[0];
            row = (row + u) | (row - u);
        }
        return __builtin_popcountll(~row & last);
    }
    for (Py_ssize_t w = 0; w < words; w++) L->row[w] = ~0ULL;
    for (Py_ssize_t i = 0; i < lt; i++) {
        uint64_t *m = lcs_mask(L, t[i], 0);
        if (!m) continue;
        uint64_t carry = 0;
        for (Py_ssize_t w = 0; w < words; w++) {
            uint64_t r = L->row[w], u = r & m[w];
            uint64_t sum = r + u + carry;
            carry = (sum < r) || (carry && sum == r);
            L->row[w] = sum | (r - u);
        }
    }
    for (Py_ssize_t w = 0; w < words; w++) zeros += __builtin_popcountll(~L->row[w] & (w == words - 1 ? last : ~0ULL));
    return zeros;
}

/* rapidfuzz's Indel.normalized_similarity of the built pattern (lp) and t, or 0.0 under the cutoff. */
static double indel_similarity(lcs_t *L, Py_ssize_t lp, const ch_t *t, Py_ssize_t lt, double cutoff) {
    Py_ssize_t total = lp + lt;
    if (!total) return 1.0;
    if (1.0 - (double)(total - 2 * (lp < lt ? lp : lt)) / (double)total < cutoff) return 0.0;
    double sim = 1.0 - (double)(total - 2 * lcs_run(L, lp, t, lt)) / (double)total;
    return sim >= cutoff ? sim : 0.0;
}

/* ------------------------------------------------------------------ drift_runs */

static inline int ends_sentence(ch_t c) { return c == '.' || c == '!' || c == '?' || c == 0x3002; }

typedef struct { Py_ssize_t a, b, norm, len; } unit_t;

/* Units as detect._SEGMENT_END cuts them: r"\n|\}\s*,\s*|(?<=[.!?。])\s+(?=\S)", whitespace-only dropped. */
static Py_ssize_t segment(const ch_t *u, Py_ssize_t n, unit_t *out) {
    Py_ssize_t k = 0, pos = 0, i = 0;
#define EMIT(end) do { Py_ssize_t e_ = (end), x_ = pos; \
        while (x_ < e_ && IS_SPACE(u[x_])) x_++; \
        if (x_ < e_) { out[k].a = pos; out[k].b = e_; k++; } pos = e_; i = e_; } while (0)
    while (i < n) {
        ch_t c = u[i];
        if (c == '\n') { EMIT(i + 1); continue; }
        if (c == '}') {
            Py_ssize_t j = i + 1;
            while (j < n && IS_SPACE(u[j])) j++;
            if (j < n && u[j] == ',') {
                j++;
                while (j < n && IS_SPACE(u[j])) j++;
                EMIT(j);
                continue;
            }
            i++;
            continue;
        }
        if (IS_SPACE(c) && i > 0 && ends_sentence(u[i - 1])) {
            Py_ssize_t j = i;
            while (j < n && IS_SPACE(u[j])) j++;
            if (j < n) { EMIT(j); continue; }
        }
        i++;
    }
    if (pos < n) EMIT(n);
#undef EMIT
    return k;
}

/* _AMOUNT.sub("0", unit).strip() into dst; returns its length. */
static Py_ssize_t normalize(const ch_t *s, Py_ssize_t n, ch_t *dst) {
    Py_ssize_t k = 0, i = 0;
    while (i < n) {
        if (IS_DECIMAL(s[i])) {
            while (i < n && IS_DECIMAL(s[i])) i++;
            while (i + 1 < n && (s[i] == '.' || s[i] == ',') && IS_DECIMAL(s[i + 1])) {
                i++;
                while (i < n && IS_DECIMAL(s[i])) i++;
            }
            dst[k++] = '0';
        } else {
            dst[k++] = s[i++];
        }
    }
    Py_ssize_t lo = 0;
    while (lo < k && IS_SPACE(dst[lo])) lo++;
    while (k > lo && IS_SPACE(dst[k - 1])) k--;
    if (lo) memmove(dst, dst + lo, sizeof(ch_t) * (k - lo));
    return k - lo;
}

typedef struct { uint64_t key; Py_ssize_t unit; } opening_t;

static PyObject *drift_runs(PyObject *self, PyObject *args) {
    PyObject *text;
    double cutoff;
    Py_ssize_t max_unit, min_units;
    if (!PyArg_ParseTuple(args, "Udnn", &text, &cutoff, &max_unit, &min_units)) return NULL;
    Py_ssize_t n;
    ch_t *u = ucs4(text, &n);
    if (!u) return NULL;
    PyObject *result = PyList_New(0);
    unit_t *units = malloc(sizeof(unit_t) * (n + 1));
    ch_t *norms = malloc(sizeof(ch_t) * (n + 1));
    double *sim = NULL;
    Py_ssize_t *back = NULL;
    opening_t *open = NULL;
    size_t open_cap = 64;
    lcs_t L = {0};
    if (!result || !units || !norms) goto nomem;
    Py_ssize_t k = segment(u, n, units), at = 0, longest = 0;
    if (k < min_units) goto done;
    for (Py_ssize_t i = 0; i < k; i++) {
        units[i].norm = at;
        units[i].len = normalize(u + units[i].a, units[i].b - units[i].a, norms + at);
        at += units[i].len;
        if (units[i].len > longest && units[i].len <= max_unit) longest = units[i].len;
    }
    sim = calloc(k + 2, sizeof(double));
    back = calloc(k + 2, sizeof(Py_ssize_t));
    while (open_cap < 2 * (size_t)k + 2) open_cap <<= 1;
    open = calloc(open_cap, sizeof(opening_t));
    if (!sim || !back || !open || lcs_init(&L, longest + 1) < 0) goto nomem;
    for (Py_ssize_t i = 0; i < k; i++) {
        const ch_t *a = norms + units[i].norm;
        Py_ssize_t la = units[i].len, cand[5], nc = 0;
        for (Py_ssize_t p = 1; p <= 4 && p <= i; p++) cand[nc++] = p;
        /* the last unit that opened with the same 12 characters: a long cycle's period */
        uint64_t key = hash_chars(a, la < 12 ? la : 12) | 1;
        size_t j = key & (open_cap - 1);
        while (open[j].key && open[j].key != key) j = (j + 1) & (open_cap - 1);
        if (open[j].key && i - open[j].unit > 4) cand[nc++] = i - open[j].unit;
        open[j].key = key;
        open[j].unit = i;
        if (la > max_unit) continue;  /* longer than any unit searched for */
        int built = 0;
        for (Py_ssize_t c = 0; c < nc; c++) {
            Py_ssize_t p = cand[c], lb = units[i - p].len;
            const ch_t *b = norms + units[i - p].norm;
            if (i == k - 1 && la < lb) lb = la;  /* cut at the limit mid-unit */
            if (lb < 8 || lb > max_unit || (double)la / (double)lb < 0.7 || (double)la / (double)lb > 1.4) continue;
            double s;
            if (la == lb && !memcmp(a, b, sizeof(ch_t) * la)) {
                s = 1.0;
            } else {
                if (!built) { lcs_build(&L, a, la); built = 1; }
                s = indel_similarity(&L, la, b, lb, cutoff);
            }
            if (s > sim[i]) {
                sim[i] = s;
                back[i] = p;
                if (s == 1.0) break;
            }
        }
        if (built) lcs_clear(&L, a, la);
    }
    /* runs of matching units; one stray unit between two matches does not end a run */
    Py_ssize_t first = -1, last = -1;
    double total = 0.0;
    Py_ssize_t *votes = calloc(k + 2, sizeof(Py_ssize_t));
    if (!votes) goto nomem;
    for (Py_ssize_t i = 0; i < k + 2; i++) {
        if (i < k && sim[i] >= cutoff) {
            if (first < 0) {
                int inside = 1;
                for (Py_ssize_t j = i - back[i] + 1; j < i; j++) inside &= sim[j] >= cutoff;
                first = inside ? i - back[i] : i;
                total = 0.0;
            }
            last = i;
            total += sim[i];
        } else if (first >= 0 && i - last > 1) {
            Py_ssize_t best_p = 0, best_votes = 0, matched = 0;
            for (Py_ssize_t j = first; j <= last; j++) {  /* the most common back distance, ties to the shortest */
                if (sim[j] < cutoff) continue;
                matched++;
                votes[back[j]]++;
            }
            for (Py_ssize_t j = first; j <= last; j++) {
                Py_ssize_t p = back[j];
                if (sim[j] < cutoff) continue;
                if (votes[p] > best_votes || (votes[p] == best_votes && p < best_p)) { best_votes = votes[p]; best_p = p; }
            }
            for (Py_ssize_t j = first; j <= last; j++) votes[back[j]] = 0;
            if (last - first + 1 >= 3) {
                int same = 1;
                const ch_t *f0 = norms + units[first].norm;
                for (Py_ssize_t j = first + 1; j <= last && same; j++)
                    same = units[j].len == units[first].len && !memcmp(norms + units[j].norm, f0, sizeof(ch_t) * units[j].len);
                int cut_after = last == k - 2 && units[k - 1].len < units[last].len;
                PyObject *bounds = PyList_New(0);
                if (!bounds) { free(votes); goto nomem; }
                for (Py_ssize_t j = first; j <= last; j++) {
                    PyObject *x = PyLong_FromSsize_t(units[j].a), *y = PyLong_FromSsize_t(units[j].b);
                    int bad = !x || !y || PyList_Append(bounds, x) < 0 || PyList_Append(bounds, y) < 0;
                    Py_XDECREF(x);
                    Py_XDECREF(y);
                    if (bad) { Py_DECREF(bounds); free(votes); goto nomem; }
                }
                PyObject *run = Py_BuildValue("nnnndnOON", first, last, units[first].a, units[last].b, total / (double)matched,
                                              best_p, same ? Py_True : Py_False, cut_after ? Py_True : Py_False, bounds);
                if (!run || PyList_Append(result, run) < 0) { Py_XDECREF(run); free(votes); goto nomem; }
                Py_DECREF(run);
            }
            first = -1;
        }
    }
    free(votes);
    goto done;
nomem:
    Py_CLEAR(result);
    if (!PyErr_Occurred()) PyErr_NoMemory();
done:
    PyMem_Free(u);
    free(units);
    free(norms);
    free(sim);
    free(back);
    free(open);
    lcs_free(&L);
    return result;
}

/* ------------------------------------------------------------------ novelty */

static inline int is_number_sep(ch_t c) { return c == '.' || c == ',' || c == ':' || c == '/'; }

/* Levenshtein distance of a and b if it is <= cutoff (<= 2), else cutoff + 1. */
static Py_ssize_t levenshtein_upto(const ch_t *a, Py_ssize_t la, const ch_t *b, Py_ssize_t lb, Py_ssize_t cutoff) {
    if (la - lb > cutoff || lb - la > cutoff) return cutoff + 1;
    Py_ssize_t row[128], prev[128];
    if (lb >= 127) {  /* long words: trim the common prefix and suffix, then compare what is left plainly */
        while (la && lb && a[0] == b[0]) { a++; b++; la--; lb--; }
        while (la && lb && a[la - 1] == b[lb - 1]) { la--; lb--; }
        if (la <= cutoff && lb <= cutoff) return la > lb ? la : lb;
        if (lb >= 127) return cutoff + 1;
    }
    for (Py_ssize_t j = 0; j <= lb; j++) prev[j] = j;
    for (Py_ssize_t i = 1; i <= la; i++) {
        row[0] = i;
        Py_ssize_t low = row[0];
        for (Py_ssize_t j = 1; j <= lb; j++) {
            Py_ssize_t v = prev[j - 1] + (a[i - 1] != b[j - 1]);
            if (prev[j] + 1 < v) v = prev[j] + 1;
            if (row[j - 1] + 1 < v) v = row[j - 1] + 1;
            row[j] = v;
            if (v < low) low = v;
        }
        if (low > cutoff) return cutoff + 1;
        memcpy(prev, row, sizeof(Py_ssize_t) * (lb + 1));
    }
    return prev[lb] <= cutoff ? prev[lb] : cutoff + 1;
}

#define RECENT_WORDS 512  /* a near word is looked for among the words last added: a drift edits a recent word */

typedef struct { const ch_t *s; Py_ssize_t n; uint64_t h; } word_t;

static PyObject *novelty(PyObject *self, PyObject *args) {
    PyObject *list;
    Py_ssize_t period, warm;
    if (!PyArg_ParseTuple(args, "O!nn", &PyList_Type, &list, &period, &warm)) return NULL;
    Py_ssize_t nu = PyList_GET_SIZE(list);
    if (warm < nu / 3) warm = nu / 3;
    ch_t **buf = calloc(nu + 1, sizeof(ch_t *));
    Py_ssize_t *len = calloc(nu + 1, sizeof(Py_ssize_t));
    char *fresh_word = calloc(nu + 1, 1);
    word_t recent[RECENT_WORDS];
    Py_ssize_t nrecent = 0, fresh_seqs = 0, numbers = 0, new_numbers = 0, later = 0;
    hset words = {0}, seqs = {0}, nums = {0};
    PyObject *out = NULL;
    if (!buf || !len || !fresh_word || hset_init(&words, 64) || hset_init(&seqs, nu) || hset_init(&nums, 64)) goto nomem;
    for (Py_ssize_t i = 0; i < nu; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyUnicode_Check(item)) { PyErr_SetString(PyExc_TypeError, "novelty takes a list of str"); goto fail; }
        if (!(buf[i] = ucs4(item, &len[i]))) goto fail;
    }
    for (Py_ssize_t i = 0; i < nu; i++) {
        const ch_t *u = buf[i];
        Py_ssize_t n = len[i], x = 0;
        int fresh = 0;
        uint64_t seq = 0x1234567ULL;
        while (x < n) {
            ch_t c = u[x];
            Py_ssize_t end;
            int number;
            if (IS_LETTER(c)) {
                end = x + 1;
                while (end < n && IS_LETTER(u[end])) end++;
                if (end - x < 3) { x = end; continue; }
                number = has(c, C_DIGIT);  /* tok[0].isdigit(): a superscript digit opens a "word" */
            } else if (IS_DECIMAL(c)) {
                end = x + 1;
                while (end < n && IS_DECIMAL(u[end])) end++;
                while (end + 1 < n && is_number_sep(u[end]) && IS_DECIMAL(u[end + 1])) {
                    end++;
                    while (end < n && IS_DECIMAL(u[end])) end++;
                }
                number = 1;
            } else {
                x++;
                continue;
            }
            uint64_t h = hash_chars(u + x, end - x);
            if (number) {
                int added = hset_add(&nums, h);
                if (added < 0) goto nomem;
                if (i >= warm) { numbers++; new_numbers += added; }
            } else {
                if (!hset_has(&words, h)) {
                    Py_ssize_t cutoff = end - x < 6 ? 1 : 2, best = cutoff + 1, at = -1;
                    Py_ssize_t lo = nrecent > RECENT_WORDS ? nrecent - RECENT_WORDS : 0;
                    for (Py_ssize_t r = lo; r < nrecent && best > 1; r++) {
                        word_t *w = &recent[r % RECENT_WORDS];
                        Py_ssize_t d = levenshtein_upto(u + x, end - x, w->s, w->n, cutoff);
                        if (d < best) { best = d; at = r; }
                    }
                    if (at < 0) {
                        fresh = 1;
                        if (hset_add(&words, h) < 0) goto nomem;
                        word_t *w = &recent[nrecent % RECENT_WORDS];
                        w->s = u + x; w->n = end - x; w->h = h;
                        nrecent++;
                    } else {
                        h = recent[at % RECENT_WORDS].h;  /* the word it is a small edit of */
                    }
                }
                seq = mix(seq * 0x100000001b3ULL + h);
            }
            x = end;
        }
        int new_seq = hset_add(&seqs, seq);
        if (new_seq < 0) goto nomem;
        if (i >= warm) {
            fresh_word[later++] = (char)fresh;
            fresh_seqs += new_seq;
        }
    }
    if (later < 2 * period) {
        out = Py_BuildValue("ddd", 1.0, 1.0, 1.0);  /* under two cycles after the first third */
    } else {
        Py_ssize_t cycles = 0, fresh_cycles = 0;
        for (Py_ssize_t j = 0; j < later; j += period) {
            int any = 0;
            for (Py_ssize_t q = j; q < j + period && q < later; q++) any |= fresh_word[q];
            cycles++;
            fresh_cycles += any;
        }
        out = Py_BuildValue("ddd", (double)fresh_cycles / cycles, (double)fresh_seqs / later,
                            numbers ? (double)new_numbers / numbers : 0.0);
    }
    goto fail;  /* cleanup */
nomem:
    PyErr_NoMemory();
fail:
    if (buf) for (Py_ssize_t i = 0; i < nu; i++) PyMem_Free(buf[i]);
    free(buf);
    free(len);
    free(fresh_word);
    hset_free(&words);
    hset_free(&seqs);
    hset_free(&nums);
    return out;
}

static PyObject *indel(PyObject *self, PyObject *args) {
    PyObject *x, *y;
    if (!PyArg_ParseTuple(args, "UU", &x, &y)) return NULL;
    Py_ssize_t la, lb;
    ch_t *a = ucs4(x, &la), *b = a ? ucs4(y, &lb) : NULL;
    lcs_t L = {0};
    PyObject *out = NULL;
    if (b && lcs_init(&L, la + 1) == 0) {
        lcs_build(&L, a, la);
        out = PyFloat_FromDouble(indel_similarity(&L, la, b, lb, 0.0));
    }
    else if (a && b) PyErr_NoMemory();
    lcs_free(&L);
    PyMem_Free(a);
    PyMem_Free(b);
    return out;
}

/* ------------------------------------------------------------------ module */

static PyMethodDef methods[] = {
    {"ngram_counts", ngram_counts, METH_O, "(tokens, distinct 1..4-grams) of a text (tokens as detect._TOKEN) or of token ids."},
    {"drift_runs", drift_runs, METH_VARARGS, "Runs of near-repeated units (lines, sentences, JSON objects) of a text."},
    {"indel", indel, METH_VARARGS, "rapidfuzz's Indel.normalized_similarity(a, b), the one drift_runs uses."},
    {"novelty", novelty, METH_VARARGS, "(word, sequence, number) novelty of a run's later units."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fast", "The detector's per-character loops, compiled.", -1, methods};

PyMODINIT_FUNC PyInit__fast(void) {
    for (ch_t c = 0; c < 256; c++) latin1[c] = classify(c);
    return PyModule_Create(&module);
}
