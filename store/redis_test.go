package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/vivi/bridge/channel"
	"github.com/vivi/bridge/session"
)

const defaultTestRedisURL = "redis://127.0.0.1:6379"

func TestRedis(t *testing.T) {
	testClient(t) // one clear failure when Redis is down, not one per subtest
	testStore(t, func(t *testing.T, opts Options) Store {
		client := testClient(t)
		opts.Prefix = testPrefix(t)
		return NewRedis(client, opts)
	})
}

// testClient connects to the test Redis (TEST_REDIS_URL, default
// 127.0.0.1:6379) and fails the test when it does not answer.
func testClient(t *testing.T, hooks ...redis.Hook) *redis.Client {
	t.Helper()
	url := os.Getenv("TEST_REDIS_URL")
	if url == "" {
		url = defaultTestRedisURL
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("TEST_REDIS_URL %q: %v", url, err)
	}
	client := redis.NewClient(opt)
	for _, h := range hooks {
		client.AddHook(h)
	}
	t.Cleanup(func() { _ = client.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s does not answer (%v): the store tests need a real Redis; "+
			"`make test` starts one, or set TEST_REDIS_URL", url, err)
	}
	return client
}

// testPrefix returns a key prefix unique to this test and deletes every key
// under it when the test ends. Other keys in the database are never touched.
func testPrefix(t *testing.T) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer(" ", "_", "/", ".").Replace(t.Name())
	prefix := "test:store:" + name + ":" + hex.EncodeToString(b[:]) + ":"
	client := testClient(t) // its Cleanup runs after deleteKeys (LIFO)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys, err := scanKeys(ctx, client, globEscape(prefix)+"*")
		if err == nil && len(keys) > 0 {
			err = client.Del(ctx, keys...).Err()
		}
		if err != nil {
			t.Errorf("cleanup of %s*: %v", prefix, err)
		}
	})
	return prefix
}

func scanKeys(ctx context.Context, client *redis.Client, match string) ([]string, error) {
	var keys []string
	it := client.Scan(ctx, 0, match, 500).Iterator()
	for it.Next(ctx) {
		keys = append(keys, it.Val())
	}
	return keys, it.Err()
}

// globEscape quotes the glob metacharacters of s for SCAN MATCH.
func globEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `*`, `\*`, `?`, `\?`, `[`, `\[`, `]`, `\]`).Replace(s)
}

// recorder is a go-redis hook that keeps the arguments of every command sent.
type recorder struct {
	mu   sync.Mutex
	cmds [][]any
}

func (r *recorder) add(cmds ...redis.Cmder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cmds {
		r.cmds = append(r.cmds, c.Args())
	}
}

func (r *recorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *recorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { r.add(cmd); return next(ctx, cmd) }
}

func (r *recorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { r.add(cmds...); return next(ctx, cmds) }
}

// TestRedisKeyLayout runs every operation and checks that each key (and
// pub/sub channel) the store touches starts with the prefix: per command via
// COMMAND GETKEYS, and by scanning the database with and without the prefix.
func TestRedisKeyLayout(t *testing.T) {
	rec := &recorder{}
	ctx, prefix := t.Context(), testPrefix(t)
	st := NewRedis(testClient(t, rec), Options{Prefix: prefix})
	marker := "mk" + prefix[len(prefix)-13:len(prefix)-1] // unique to this run
	sid, token := "CA"+marker, "tok"+marker

	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	a := agent("a-"+marker, "A")
	must("Apply", st.Apply(ctx, []channel.Agent{a}, []channel.Channel{chann("c-"+marker, a.ID, []string{"10.9.9.9"}, []string{"1001"})}))
	must("SaveAgent", st.SaveAgent(ctx, agent("b-"+marker, "B")))
	must("SaveChannel", st.SaveChannel(ctx, chann("d-"+marker, a.ID, []string{"10.9.9.8"}, []string{"1001"})))
	for _, ext := range []string{"1001", "1002"} {
		_, _ = st.ChannelByOrigin(ctx, "10.9.9.9", ext)
	}
	_, _ = st.ChannelByOrigin(ctx, "10.9.9.7", "1001")
	must("DeleteChannel", st.DeleteChannel(ctx, "d-"+marker))
	must("DeleteAgent", st.DeleteAgent(ctx, "b-"+marker))
	_, err := st.Agents(ctx)
	must("Agents", err)
	_, err = st.Channels(ctx)
	must("Channels", err)
	must("CreateSession", st.CreateSession(ctx, session.New(sid, "c", "a", time.Now())))
	must("CreateSession(other)", st.CreateSession(ctx, session.New(sid+"x", "c", "a", time.Now())))
	_, err = st.UpdateSession(ctx, sid, func(s *session.Session) error { s.End("stop", time.Now()); return nil })
	must("UpdateSession", err)
	for _, active := range []bool{true, false} {
		_, err = st.Sessions(ctx, active, 0)
		must("Sessions", err)
	}
	_, err = st.ClaimToken(ctx, token, time.Minute)
	must("ClaimToken", err)
	msgs, cancel, err := st.Subscribe(ctx, "t-"+marker)
	must("Subscribe", err)
	channels, err := st.client.PubSubChannels(ctx, "*"+marker+"*").Result()
	must("PUBSUB CHANNELS", err)
	if len(channels) != 1 || channels[0] != prefix+"topic:t-"+marker {
		t.Errorf("pub/sub channels = %v, want [%stopic:t-%s]", channels, prefix, marker)
	}
	must("Publish", st.Publish(ctx, "t-"+marker, []byte("x")))
	<-msgs
	cancel()

	checkCommandKeys(t, prefix, rec)
	checkScan(t, st.client, prefix, marker)
}

// checkCommandKeys asks Redis which arguments of each recorded command are keys.
func checkCommandKeys(t *testing.T, prefix string, rec *recorder) {
	t.Helper()
	plain := testClient(t)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	checked := 0
	for _, args := range rec.cmds {
		name := strings.ToLower(fmt.Sprint(args[0]))
		if name == "publish" {
			if ch := fmt.Sprint(args[1]); !strings.HasPrefix(ch, prefix) {
				t.Errorf("PUBLISH to %q, outside prefix %q", ch, prefix)
			}
			continue
		}
		keys, err := plain.Do(t.Context(), append([]any{"command", "getkeys"}, args...)...).StringSlice()
		if err != nil { // a command without keys: PING, MULTI, EXEC, HELLO...
			continue
		}
		for _, k := range keys {
			checked++
			if !strings.HasPrefix(k, prefix) {
				t.Errorf("%s writes or reads key %q outside prefix %q", name, k, prefix)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d keys checked in %d commands; is the recorder hooked?", checked, len(rec.cmds))
	}
}

// checkScan scans the database with the prefix (the expected layout) and
// without it (keys named after this run's marker must all be prefixed).
func checkScan(t *testing.T, client redis.UniversalClient, prefix, marker string) {
	t.Helper()
	c := client.(*redis.Client)
	ours, err := scanKeys(t.Context(), c, globEscape(prefix)+"*")
	if err != nil {
		t.Fatalf("SCAN: %v", err)
	}
	got := make(map[string]bool)
	for _, k := range ours {
		got[strings.TrimPrefix(k, prefix)] = true
	}
	for _, want := range []string{
		"{cfg}:agents", "{cfg}:channels", "{cfg}:routes", "{cfg}:version", "{cfg}:ip:10.9.9.9",
		"{sess}:call:CA" + marker, "{sess}:call:CA" + marker + "x", "{sess}:active", "{sess}:ended",
		"token:tok" + marker,
	} {
		if !got[want] {
			t.Errorf("key %s%s missing; keys under the prefix: %v", prefix, want, ours)
		}
	}
	if got["{cfg}:ip:10.9.9.8"] {
		t.Error("the IP set of a deleted channel's only IP remains")
	}
	if len(got) != 10 {
		t.Errorf("keys under the prefix = %v, want exactly the 10 above", ours)
	}
	anywhere, err := scanKeys(t.Context(), c, "*"+marker+"*")
	if err != nil {
		t.Fatalf("SCAN: %v", err)
	}
	if len(anywhere) != 3 {
		t.Errorf("keys naming %s anywhere = %v, want the 3 under the prefix", marker, anywhere)
	}
	for _, k := range anywhere {
		if !strings.HasPrefix(k, prefix) {
			t.Errorf("key %q outside prefix %q", k, prefix)
		}
	}
}

// TestRedisSubscribeClientClosed: a subscription ends, closing its channel,
// when the client under it is closed, and cancel still returns.
func TestRedisSubscribeClientClosed(t *testing.T) {
	client := testClient(t)
	st := NewRedis(client, Options{Prefix: testPrefix(t)})
	msgs, cancel, err := st.Subscribe(t.Context(), "t")
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	defer cancel()
	_ = client.Close()
	select {
	case _, ok := <-msgs:
		if ok {
			t.Fatal("got a message, want the channel closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel still open 5s after the client was closed")
	}
}
