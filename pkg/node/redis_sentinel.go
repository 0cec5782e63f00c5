package node

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// sentinelScheme starts a -redis-url naming a master watched by Redis
// Sentinel.
const sentinelScheme = "redis-sentinel://"

func isSentinelURL(raw string) bool { return strings.HasPrefix(raw, sentinelScheme) }

// sentinelURL is a parsed redis-sentinel:// URL.
type sentinelURL struct {
	Addrs              []string // the sentinels
	Master             string   // the master's name in the sentinels' configuration
	Username, Password string   // for the master and its replicas
	SentinelPassword   string   // for the sentinels (requirepass in sentinel.conf)
	DB                 int
	Prefix             string // key and channel prefix; empty: history.DefaultPrefix
}

// parseSentinelURL parses
//
//	redis-sentinel://[user[:password]@]host:port[,host:port...]/master-name[?db=N&prefix=P&sentinel_password=S]
//
// The addresses are the sentinels' (any one that answers names the
// master); user and password are the master's.
func parseSentinelURL(raw string) (sentinelURL, error) {
	var u sentinelURL
	rest, ok := strings.CutPrefix(raw, sentinelScheme)
	if !ok {
		return u, fmt.Errorf("not a %s URL", sentinelScheme)
	}
	rest, query, _ := strings.Cut(rest, "?")
	hosts, master, ok := strings.Cut(rest, "/")
	master = strings.TrimSuffix(master, "/")
	if !ok || master == "" || strings.Contains(master, "/") {
		return u, fmt.Errorf("want %shost:port,.../master-name: no master name", sentinelScheme)
	}
	var err error
	if u.Master, err = url.PathUnescape(master); err != nil {
		return u, fmt.Errorf("master name: %w", err)
	}
	if i := strings.LastIndexByte(hosts, '@'); i >= 0 {
		user, pass, hasPass := strings.Cut(hosts[:i], ":")
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
	if u.Addrs, err = parseAddrs(hosts, "sentinel address"); err != nil {
		return u, err
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return u, err
	}
	for k, v := range q {
		val := v[len(v)-1]
		switch k {
		case "db":
			if u.DB, err = strconv.Atoi(val); err != nil || u.DB < 0 {
				return u, fmt.Errorf("db %q: want a database number", val)
			}
		case "prefix":
			u.Prefix = val
		case "sentinel_password":
			u.SentinelPassword = val
		default:
			return u, fmt.Errorf("unknown option %q (known: db, prefix, sentinel_password)", k)
		}
	}
	return u, nil
}

// openRedisSentinel connects to the master of a redis-sentinel://
// -redis-url through go-redis's failover client: it asks the sentinels for
// the master's address on every dial, listens for their +switch-master
// announcements, and closes its connections to a demoted master, so that
// commands and the broker's subscription connection (which redials
// through the same dialer) follow a failover by themselves. Like
// openRedis, a node that cannot reach the master at start still starts,
// not ready, and recovers by itself.
func openRedisSentinel(ctx context.Context, cfg Config, log *slog.Logger) (*backends, error) {
	u, err := parseSentinelURL(cfg.RedisURL)
	if err != nil {
		return nil, fmt.Errorf("node: -redis-url: %w", err)
	}
	// The single client's short timeouts (see openRedis).
	client := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName:       u.Master,
		SentinelAddrs:    u.Addrs,
		SentinelPassword: u.SentinelPassword,
		Username:         u.Username,
		Password:         u.Password,
		DB:               u.DB,
		DialTimeout:      2 * time.Second,
		ReadTimeout:      readTimeout(cfg),
		WriteTimeout:     2 * time.Second,
		MaxRetries:       1,
		DialerRetries:    1,
		Dialer:           redisDialer(2*time.Second, nil),
	})
	return redisBackends(ctx, cfg, log, "redis-sentinel", client, u.Prefix)
}
