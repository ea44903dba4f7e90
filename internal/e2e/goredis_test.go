package e2e

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/syncproxy/syncproxy/internal/redistest"
)

// TestGoRedis drives the proxy with go-redis, a second real client: pipelines,
// optimistic transactions (TxPipelined with Watch, retried on conflicts made by
// concurrent clients), pub/sub; then the slaves converge.
func TestGoRedis(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	master, slaves := servers[0], servers[1:]
	addr, _ := startProxy(t, master, slaves...)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rdb := goredis.NewClient(&goredis.Options{Addr: addr, PoolSize: 8})
	defer rdb.Close()

	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	// Pipelines.
	cmds, err := rdb.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for i := 0; i < 100; i++ {
			p.Set(ctx, fmt.Sprintf("k%d", i), i, 0)
			p.Incr(ctx, "counter")
		}
		p.Get(ctx, "k42")
		return nil
	})
	if err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	if v := cmds[len(cmds)-1].(*goredis.StringCmd).Val(); v != "42" {
		t.Fatalf("GET k42 in the pipeline: %q", v)
	}
	// Optimistic transactions: concurrent increments through WATCH/MULTI/EXEC,
	// retried on conflict, must all count exactly once.
	const workers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				for {
					err := rdb.Watch(ctx, func(tx *goredis.Tx) error {
						n, err := tx.Get(ctx, "txcounter").Int()
						if err != nil && !errors.Is(err, goredis.Nil) {
							return err
						}
						_, err = tx.TxPipelined(ctx, func(p goredis.Pipeliner) error {
							p.Set(ctx, "txcounter", n+1, 0)
							return nil
						})
						return err
					}, "txcounter")
					if errors.Is(err, goredis.TxFailedErr) {
						continue // a conflict: try again, as applications do
					}
					if err != nil {
						errs <- err
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("transaction: %v", err)
	}
	if n, err := rdb.Get(ctx, "txcounter").Int(); err != nil || n != workers*each {
		t.Fatalf("txcounter = %d (%v), want %d", n, err, workers*each)
	}
	// Pub/sub.
	sub := rdb.Subscribe(ctx, "events")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	ch := sub.Channel()
	if err := rdb.Publish(ctx, "events", "hello").Err(); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case m := <-ch:
		if m.Channel != "events" || m.Payload != "hello" {
			t.Fatalf("message %+v", m)
		}
	case <-ctx.Done():
		t.Fatal("no message")
	}
	redistest.WaitConverged(t, convergeTimeout, master, slaves...)
}
