/* replay - run a fuzz driver over files: farebox-fuzz-NAME FILE|DIR...
 * Used where libFuzzer is not linked in (the sanitizer build runs every seed
 * corpus through its driver as a test; a crash artifact from a fuzzing run is
 * reproduced the same way), and says how many payments passed every
 * offline check. Exits 0 after running every input, non-zero when
 * an input cannot be read (a broken property aborts). */
#include "fuzz.h"

#include <dirent.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>

#define REPLAY_MAX (1 << 20) /* bytes of one input */

static int s_run_file(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "replay: cannot open %s\n", path);
        return -1;
    }
    uint8_t *buf = malloc(REPLAY_MAX);
    size_t n = buf ? fread(buf, 1, REPLAY_MAX, f) : 0;
    bool too_big = buf && n == REPLAY_MAX && fgetc(f) != EOF;
    fclose(f);
    if (!buf || too_big) {
        fprintf(stderr, "replay: %s is larger than %d bytes\n", path, REPLAY_MAX);
        free(buf);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    (*count)++;
    return 0;
}

static int s_run_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: %s does not exist\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode))
        return s_run_file(path, count);
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "replay: cannot read the directory %s\n", path);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char sub[4096];
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        rc = s_run_path(sub, count);
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    size_t count = 0;
    for (int i = 1; i < argc; i++)
        if (s_run_path(argv[i], &count) != 0)
            return 1;
    if (count == 0) {
        fprintf(stderr, "replay: no input found\n");
        return 1;
    }
    printf("replay: %zu inputs ran, %lu passed every offline check\n", count, fuzz_passes);
    return 0;
}
