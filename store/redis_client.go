package store

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Client defaults of NewUniversalClient, for the fields UniversalOptions
// leaves zero. They bound what a dead or unreachable server costs a
// command: seconds, not the minutes of go-redis's defaults on Cluster (a
// 60 s slot map reload) or of an unanswered dial.
const (
	// ClientDialTimeout bounds one connection attempt (Redis is on the
	// local network; an unanswered SYN means a dead host).
	ClientDialTimeout = time.Second
	// ClientDialerRetries is how many dial attempts one new connection gets
	// (go-redis counts the first; its default is 5).
	ClientDialerRetries = 2
	// ClientReadTimeout and ClientWriteTimeout bound one command's reply
	// and send; the store's commands are small (a session, a page of 100).
	ClientReadTimeout  = 2 * time.Second
	ClientWriteTimeout = 2 * time.Second
	// ClientPoolTimeout bounds the wait for a free connection.
	ClientPoolTimeout = 3 * time.Second
	// ClusterReloadInterval is the longest a Cluster client keeps a slot
	// map without reloading it; connection errors and redirects reload it
	// at once (clusterReloadHook), so this only matters to a client with
	// no traffic, such as one holding a subscription.
	ClusterReloadInterval = 5 * time.Second
)

// NewUniversalClient returns the go-redis client for o as
// redis.NewUniversalClient chooses it: Sentinel (a FailoverClient) when
// o.MasterName is set, Cluster when o has several addresses and no master
// name, else a single node. Zero timeouts take the Client* defaults above,
// and a Cluster client reloads its slot map as soon as a node fails or
// redirects, so a command after a failover goes to the promoted replica
// instead of the dead master. MaxRetries and MaxRedirects keep go-redis's
// bounded defaults (3) unless o sets them.
func NewUniversalClient(o *redis.UniversalOptions) redis.UniversalClient {
	c := *o
	if c.DialTimeout == 0 {
		c.DialTimeout = ClientDialTimeout
	}
	if c.DialerRetries == 0 {
		c.DialerRetries = ClientDialerRetries
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = ClientReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = ClientWriteTimeout
	}
	if c.PoolTimeout == 0 {
		c.PoolTimeout = ClientPoolTimeout
	}
	if c.MasterName == "" && (len(c.Addrs) > 1 || c.IsClusterMode) {
		// What redis.NewUniversalClient builds here, plus the reload
		// interval UniversalOptions has no field for.
		co := c.Cluster()
		co.ClusterStateReloadInterval = ClusterReloadInterval
		cc := redis.NewClusterClient(co)
		cc.OnNewNode(func(node *redis.Client) { node.AddHook(clusterReloadHook{cc}) })
		return cc
	}
	return redis.NewUniversalClient(&c)
}

// clusterReloadHook is on every node client of a Cluster client: a command
// (or a WATCH transaction, which go-redis runs on the node client directly)
// that fails on the connection or is redirected asks the Cluster client to
// reload its slot map. go-redis itself reloads only on MOVED within a
// single command, so after a master dies every command would go on dialing
// it until the periodic reload; go-redis coalesces the reloads (at most one
// every 200 ms).
type clusterReloadHook struct{ cluster *redis.ClusterClient }

func (h clusterReloadHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err != nil && ctx.Err() == nil {
			h.cluster.ReloadState(context.WithoutCancel(ctx))
		}
		return conn, err
	}
}

func (h clusterReloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.check(ctx, err)
		return err
	}
}

func (h clusterReloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.check(ctx, err)
		for _, c := range cmds {
			if err == nil || c.Err() != err {
				h.check(ctx, c.Err())
			}
		}
		return err
	}
}

func (h clusterReloadHook) check(ctx context.Context, err error) {
	if staleSlotMap(err) && ctx.Err() == nil {
		h.cluster.ReloadState(context.WithoutCancel(ctx))
	}
}

// staleSlotMap reports whether err says the node asked is not (or no longer)
// the one serving the slot: the connection failed, or the node redirects
// or refuses as a replica or a cluster without quorum would.
func staleSlotMap(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, redis.TxFailedErr) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"MOVED ", "ASK ", "READONLY ", "CLUSTERDOWN ", "MASTERDOWN ", "LOADING "} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
	}
	return false
}
