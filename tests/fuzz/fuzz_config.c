/*
 * libFuzzer harness for the configuration file parser (common/conf.c
 * driven by dispatcher/config.c's table): the input is the text of a
 * `--config FILE`. config_load() must accept it or refuse it with one line,
 * never crash, and leave nothing allocated after config_free(); an accepted
 * configuration must hold a usable retry schedule.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char path[64];

static void remove_file(void)
{
	unlink(path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	snprintf(path, sizeof(path), "/tmp/reghook-fuzz-config-XXXXXX");
	int fd = mkstemp(path);
	if (fd < 0) {
		perror("mkstemp");
		abort();
	}
	close(fd);
	atexit(remove_file);
	/* The environment is a configuration source too: only the file counts here. */
	clearenv();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0)
		abort();
	char *argv[] = {"reghook", "--config", path, NULL};
	int argc = 3;
	struct config cfg;
	if (config_load(&cfg, &argc, argv)) {
		if (argc != 1 || cfg.retry_steps < 1 || cfg.retry_steps > CONFIG_MAX_RETRY_STEPS)
			abort();
		config_free(&cfg);
	}
	return 0;
}
