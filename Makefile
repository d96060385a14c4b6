# postline: the two commands of the README, and a few more.
#   make demo    install what is missing, start the local mail stack, run the example project end to end
#   make test    install what is missing, run the whole test suite (starts and stops its own servers)
#   make bench   the benchmarks under bench/ (not part of the tests)
.PHONY: demo test bench bootstrap stack-stop clean

bootstrap:
	scripts/bootstrap.sh

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench: bootstrap
	scripts/bench.sh

stack-stop:
	.venv/bin/postline dev-stack stop

clean:
	rm -rf .venv .devstack .pytest_cache bench/out
