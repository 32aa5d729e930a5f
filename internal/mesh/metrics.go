package mesh

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register exports the node's counters to reg as keymesh_mesh_* metrics
// (one node per registry).
func (n *Node) Register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "keymesh", Subsystem: "mesh", Name: name, Help: help,
		}, func() float64 { return float64(f()) })
	}
	cs := []prometheus.Collector{
		counter("sent_total", "Mesh messages sent to other instances.", n.sent.Load),
		counter("send_failed_total", "Mesh messages that could not be sent.", n.sendFailed.Load),
		counter("received_total", "Datagrams received on the mesh socket.", n.received.Load),
		counter("accepted_total", "Mesh messages accepted and delivered.", n.accepted.Load),
		counter("heartbeats_total", "Authentic heartbeats received from other instances.", n.heartbeats.Load),
	}
	for r := range numDrops {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "keymesh", Subsystem: "mesh", Name: "dropped_total",
			Help:        "Datagrams dropped on the mesh socket, by reason.",
			ConstLabels: prometheus.Labels{"reason": dropNames[r]},
		}, func() float64 { return float64(n.dropped[r].Load()) }))
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, reg.Register(c))
	}
	return errors.Join(errs...)
}
