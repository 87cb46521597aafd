// Package store persists agents, channels (with the routing index) and call
// sessions, and carries pod-to-pod commands. Memory is the one-process store
// (REDIS_URL empty); Redis is shared by every pod. Both pass one conformance
// suite (conformance_test.go) and so have the same semantics.
//
// # Redis key layout
//
// Every key and pub/sub channel starts with Options.Prefix, shown here as the
// default "vivi:". Values are JSON.
//
//	vivi:{cfg}:agents       hash    agent ID -> agent
//	vivi:{cfg}:channels     hash    channel ID -> channel
//	vivi:{cfg}:routes       hash    "<ip>|<ext>" -> channel ID (the routing index)
//	vivi:{cfg}:ip:<ip>      set     IDs of the channels whose OriginIPs list <ip>
//	vivi:{cfg}:version      string  counter bumped by every config write; config
//	                                transactions WATCH it
//	vivi:{sess}:call:<sid>  string  session; expires ActiveTTL after its last
//	                                write while active, Retention once terminal
//	vivi:{sess}:active      zset    call SIDs of active sessions, scored by
//	                                last write (Unix ms)
//	vivi:{sess}:ended       zset    call SIDs of transferred/ended sessions, same score
//	vivi:token:<id>         string  a used stream token (SET NX PX)
//	vivi:{cfg}:marker:<pod>:<v>   string  a process's markers, one in each group
//	vivi:{sess}:marker:<pod>:<v>          (24 h TTL, refreshed by its checks): either
//	                                      gone means Redis (or that Cluster master) lost its data
//	vivi:pods               zset    pods ready for new calls, scored by their last
//	                                beat (Unix ms); entries older than 1 min removed
//	vivi:topic:<topic>      -       a pub/sub channel name, not a key
//
// The hash tags {cfg} and {sess} put each group in one Cluster slot, so the
// multi-key transactions (config writes with the index; a session with its
// index sets) work on Cluster. The cost is that all sessions share a slot,
// one node's worth of throughput, ample for the call rates of one deployment.
// Tokens and pub/sub are single-key and spread freely.
//
// The routing lookup (ChannelByOrigin) reads routes, the IP set and the
// channel in one Lua call: O(1), never a scan of channels. Listing sessions
// reads an index page by page; entries whose session key has expired are
// skipped and removed, and every session write also removes index entries
// older than their TTL (index scores and the TTL share the write time, so
// that bound is exact up to clock skew between pods). DeleteAgent reads all
// channels to find users of the agent: a rare admin operation, not a hot path.
package store
