// Runs Python code in a microVM that writes a file, reads the file back and
// prints it. Build against libztee (see bindings/go/ztee); from the
// repository root after tools/dev setup:
//
//	cd examples/go && CGO_LDFLAGS="-L$PWD/../../build/lib -Wl,-rpath,$PWD/../../build/lib" go run .
package main

import (
	"context"
	"fmt"
	"os"

	"libztee.dev/ztee/ztee"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run() error {
	rt, err := ztee.NewRuntime(nil)
	if err != nil {
		return err
	}
	defer rt.Close()
	ctx := context.Background()
	sb, err := rt.NewSandbox(ctx, nil) // boots a microVM
	if err != nil {
		return err
	}
	defer sb.Close() // destroys it
	code := `open("/tmp/answer.txt", "w").write(str(6 * 7))`
	if _, err := sb.Exec(ctx, []string{"python3", "-c", code}, nil); err != nil {
		return err
	}
	data, err := sb.ReadFile(ctx, "/tmp/answer.txt", 0)
	if err != nil {
		return err
	}
	fmt.Println(string(data)) // 42
	return nil
}
