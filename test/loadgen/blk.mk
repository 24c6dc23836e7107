# blk-loadgen alone (make -f blk.mk, as bench:blk, test/loadgen-blk.ts and
# vm-images/setup.mjs call it): the rules are in Makefile.
include Makefile

.DEFAULT_GOAL := blk
