module libztee.dev/benchmarks/go

go 1.19

require libztee.dev/ztee v0.0.0

replace libztee.dev/ztee => ../../bindings/go
