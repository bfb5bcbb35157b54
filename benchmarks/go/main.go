// One side of ztee-bench-bindings: run("true") and a 1 MiB read through the
// Go binding. Prints {"lang": "go", ...} like ztee-bench-capi.
// Usage: go run ./benchmarks/go [CALLS]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"libztee.dev/ztee/ztee"
)

func p50(v []float64) float64 {
	sort.Float64s(v)
	n := len(v)
	if n%2 == 1 {
		return v[n/2]
	}
	return (v[n/2-1] + v[n/2]) / 2
}

func main() {
	calls := 30
	if len(os.Args) > 1 {
		const usage = "usage: ztee-bench-go [CALLS (1..1000000, default 30)]"
		if os.Args[1] == "--help" || os.Args[1] == "-h" {
			fmt.Println(usage)
			return
		}
		n, err := strconv.Atoi(os.Args[1])
		if err != nil || n < 1 || n > 1000000 || len(os.Args) > 2 {
			fmt.Fprintf(os.Stderr, "error: bad arguments %q\n%s\n", os.Args[1:], usage)
			os.Exit(2)
		}
		calls = n
	}
	if err := run(calls); err != nil {
		fmt.Fprintln(os.Stderr, "bench go:", err)
		os.Exit(1)
	}
}

func run(calls int) error {
	rt, err := ztee.NewRuntime(nil)
	if err != nil {
		return err
	}
	defer rt.Close()
	ctx := context.Background()
	sb, err := rt.NewSandbox(ctx, nil)
	if err != nil {
		return err
	}
	defer sb.Close()
	if err := sb.WriteFile(ctx, "/tmp/mib", bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		return err
	}
	var runUs, readUs []float64
	for i := -20; i < calls; i++ { // 20 warm-up calls
		t0 := time.Now()
		if _, err := sb.Exec(ctx, []string{"true"}, nil); err != nil {
			return err
		}
		t1 := time.Now()
		data, err := sb.ReadFile(ctx, "/tmp/mib", 0)
		if err != nil || len(data) != 1<<20 {
			return fmt.Errorf("read: %v (%d bytes)", err, len(data))
		}
		t2 := time.Now()
		if i >= 0 {
			runUs = append(runUs, float64(t1.Sub(t0).Microseconds()))
			readUs = append(readUs, float64(t2.Sub(t1).Microseconds()))
		}
	}
	var pingUs []float64
	for i := -50; i < 10*calls; i++ {
		t0 := time.Now()
		if err := sb.Ping(); err != nil {
			return err
		}
		if i >= 0 {
			pingUs = append(pingUs, float64(time.Since(t0).Nanoseconds())/1e3)
		}
	}
	out, _ := json.Marshal(map[string]any{"lang": "go", "run_true_p50_us": p50(runUs),
		"read_1mib_p50_us": p50(readUs), "ping_p50_us": p50(pingUs), "calls": calls})
	fmt.Println(string(out))
	return nil
}
