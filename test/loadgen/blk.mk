# blk-loadgen: the vhost-user-blk front-end of bench:blk (test/loadgen/blk.c; one file, its own
# binary, nothing shared with tmem-loadgen). make -f blk.mk
CC ?= gcc
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -pthread
BUILD := build

all: $(BUILD)/blk-loadgen

$(BUILD)/blk-loadgen: blk.c blk.mk | $(BUILD)
	$(CC) $(CFLAGS) -o $@ blk.c -pthread

$(BUILD):
	mkdir -p $(BUILD)

.PHONY: all
