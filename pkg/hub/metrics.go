package hub

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	sessions       *prometheus.GaugeVec
	pending        prometheus.Gauge
	pendingDropped prometheus.Counter
	eventsDropped  prometheus.Counter
	refused        prometheus.Counter
	disconnects    *prometheus.CounterVec
	published      prometheus.Counter
	publishErrors  prometheus.Counter
	inflight       prometheus.Gauge
	publishSeconds prometheus.Histogram
	delivered      prometheus.Counter
	duplicates     prometheus.Counter
	backfills      prometheus.Counter
	truncatedJumps prometheus.Counter
	regressions    prometheus.Counter
	publishesHeld  prometheus.Counter
	busReconnects  prometheus.Counter
	historyErrors  prometheus.Counter
	fanoutLag      prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, h *Hub) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chat_hub_sessions", Help: "Open sessions on this node, by transport.",
		}, []string{"transport"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chat_hub_pending_connections", Help: "Connections admitted that have not joined yet (they count against -max-streams).",
		}),
		pendingDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_held_deliveries_dropped_total", Help: "Deliveries a room dropped while catching up (over -max-replay-bytes); it reads them from history instead.",
		}),
		eventsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_presence_events_dropped_total", Help: "Join and leave events not delivered because their room was over its event budget (churn).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_connections_refused_total", Help: "Connections refused because the node was full.",
		}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chat_hub_disconnects_total", Help: "Sessions closed, by reason.",
		}, []string{"reason"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_messages_published_total", Help: "Chat messages stored and published by this node.",
		}),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_publish_errors_total", Help: "Publishes that failed (the sender got an error).",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "chat_hub_inflight_publishes", Help: "Stream clients' publishes under way: handed to the bus (or being checked) and not yet answered; at most -max-inflight-sends per stream.",
		}),
		publishSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "chat_hub_publish_duration_seconds", Help: "Time from a client's send to the bus acknowledging it.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_frames_delivered_total", Help: "Frames written to clients (messages, history, events).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_duplicate_deliveries_total", Help: "Bus deliveries dropped because their id was already delivered.",
		}),
		backfills: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_backfills_total", Help: "Gaps in bus deliveries filled from history.",
		}),
		truncatedJumps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_backfills_truncated_total", Help: "Backfills that found what a room missed gone from history (and from the bus) and skipped to what the log holds; event clients are told.",
		}),
		regressions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_log_regressions_total", Help: "Rooms whose log went back within its epoch (a Redis failover or an AOF that lost writes), found by this node: it moved the room to a new epoch, and clients were told.",
		}),
		publishesHeld: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_publishes_held_total", Help: "Publishes that waited because the bus had lost its subscriptions (until it was back and the rooms were checked).",
		}),
		busReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_bus_reconnects_total", Help: "Times the bus lost and re-established its subscriptions.",
		}),
		historyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chat_hub_history_errors_total", Help: "History reads that failed (joins refused, backfills retried).",
		}),
		fanoutLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "chat_hub_fanout_lag_seconds", Help: "Time from a message's server timestamp to its write to a client, for live messages (one sample per write, its oldest message).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	// Start every reason at zero so dashboards see the series.
	for r := CloseNormal; r <= CloseAbuse; r++ {
		m.disconnects.WithLabelValues(r.String())
	}
	if reg == nil {
		return m, nil
	}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "active_users", Help: "Distinct users with at least one session on this node (the seed contract's metric).",
	}, func() float64 { return float64(h.ActiveUsers()) })
	for _, c := range []prometheus.Collector{m.sessions, m.pending, m.pendingDropped, m.eventsDropped, m.refused, m.disconnects, m.published, m.publishErrors, m.inflight,
		m.publishSeconds, m.delivered, m.duplicates, m.backfills, m.truncatedJumps, m.regressions, m.publishesHeld, m.busReconnects, m.historyErrors, m.fanoutLag, active} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("hub: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) disconnect(r CloseReason) { m.disconnects.WithLabelValues(r.String()).Inc() }
