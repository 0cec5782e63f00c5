package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"example.com/chat/pkg/history"
	"example.com/chat/pkg/presence"
	"example.com/chat/pkg/pubsub"
)

// clusterScheme starts a -redis-url naming a Redis Cluster.
const clusterScheme = "redis-cluster://"

func isClusterURL(raw string) bool { return strings.HasPrefix(raw, clusterScheme) }

// clusterURL is a parsed redis-cluster:// URL.
type clusterURL struct {
	Addrs              []string
	Username, Password string
	Prefix             string // key and channel prefix; empty: history.DefaultPrefix
}

// parseClusterURL parses
//
//	redis-cluster://[user[:password]@]host:port[,host:port...][/][?prefix=P]
//
// The addresses are seeds: any reachable node tells the client the rest.
// A cluster has no databases, so no /db path is accepted.
func parseClusterURL(raw string) (clusterURL, error) {
	var u clusterURL
	rest, ok := strings.CutPrefix(raw, clusterScheme)
	if !ok {
		return u, fmt.Errorf("not a %s URL", clusterScheme)
	}
	hosts, query, _ := strings.Cut(rest, "?")
	hosts = strings.TrimSuffix(hosts, "/")
	if i := strings.LastIndexByte(hosts, '@'); i >= 0 {
		user, pass, hasPass := strings.Cut(hosts[:i], ":")
		var err error
		if u.Username, err = url.PathUnescape(user); err != nil {
			return u, fmt.Errorf("user name: %w", err)
		}
		if hasPass {
			if u.Password, err = url.PathUnescape(pass); err != nil {
				return u, fmt.Errorf("password: %w", err)
			}
		}
		hosts = hosts[i+1:]
	}
	if strings.Contains(hosts, "/") {
		return u, fmt.Errorf("a cluster has no database: remove the path of %q", hosts)
	}
	var err error
	if u.Addrs, err = parseAddrs(hosts, "address"); err != nil {
		return u, err
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return u, err
	}
	for k, v := range q {
		switch k {
		case "prefix":
			u.Prefix = v[len(v)-1]
		default:
			return u, fmt.Errorf("unknown option %q (known: prefix)", k)
		}
	}
	return u, nil
}

// openRedisCluster connects to the Redis Cluster of a redis-cluster://
// -redis-url (Redis 7 or later: the bus is sharded pub/sub). Like
// openRedis, a node that cannot reach the cluster at start still starts,
// not ready, and recovers by itself.
func openRedisCluster(ctx context.Context, cfg Config, log *slog.Logger) (*backends, error) {
	u, err := parseClusterURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("node: -redis-url: %w", err)
	}
	// The single client's short timeouts, per node (see openRedis).
	client := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:         u.Addrs,
		Username:      u.Username,
		Password:      u.Password,
		DialTimeout:   2 * time.Second,
		ReadTimeout:   readTimeout(cfg),
		WriteTimeout:  2 * time.Second,
		MaxRetries:    1,
		DialerRetries: 1,
		Dialer:        redisDialer(2*time.Second, nil),
	})
	// Ready means every master answers: with the default
	// cluster-require-full-coverage, a cluster missing a master serves no
	// room at all. ForEachMaster re-reads the slot map first, so a
	// promoted replica counts, and a dead master that lost its slots does
	// not.
	ping := func(ctx context.Context) error {
		return client.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		})
	}
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := ping(pctx); err != nil {
		log.Warn("redis cluster unreachable at start; serving not-ready until it answers", "err", err)
	}
	b := pubsub.NewRedisCluster(pubsub.RedisClusterConfig{
		Client:      client,
		Prefix:      u.Prefix,
		HistorySize: cfg.LogSize,
		HistoryTTL:  cfg.HistoryTTL,
		Logger:      log,

		MinReplicas:    cfg.RedisMinReplicas,
		ReplicaTimeout: cfg.RedisReplicaTimeout,
	})
	return &backends{
		name:     "redis-cluster",
		broker:   b,
		history:  history.NewRedis(history.RedisConfig{Client: client, Prefix: u.Prefix}),
		presence: presence.NewRedis(client, u.Prefix),
		ping:     ping,
		redis:    client,
		prefix:   history.NewKeys(u.Prefix).Prefix(),
		close: func() {
			b.Close()
			client.Close()
		},
	}, nil
}

// parseAddrs parses a URL's comma-separated host:port list (Cluster seeds,
// sentinels); what names an address in errors.
func parseAddrs(hosts, what string) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(hosts, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, a, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 || host == "" {
			return nil, fmt.Errorf("%s %q: want host:port", what, a)
		}
		addrs = append(addrs, a)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no %s", what)
	}
	return addrs, nil
}
