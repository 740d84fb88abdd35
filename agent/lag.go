package agent

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// LagLimit is a /replica?lag= limit: bytes of WAL (Bytes ≥ 0), or a
// replay delay (Bytes < 0, Duration).
type LagLimit struct {
	Bytes    int64
	Duration time.Duration
}

// sizeUnits are PostgreSQL's memory units (1024-based), case-insensitive
// here as Patroni's ?lag= takes them.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"tb", 1 << 40}, {"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"b", 1}}

// ParseLagLimit reads a lag limit: a byte count ("16777216", "16MB",
// "512kB") or a duration ("500ms", "10s", "1m"). The error says what is
// accepted.
func ParseLagLimit(s string) (*LagLimit, error) {
	t := strings.TrimSpace(s)
	bad := func() error {
		return fmt.Errorf("lag=%q is not a size or a duration: give bytes (16777216, 16MB, 512kB) or a duration (500ms, 10s, 1m)", s)
	}
	if t == "" {
		return nil, bad()
	}
	if n, err := strconv.ParseInt(t, 10, 64); err == nil {
		if n < 0 {
			return nil, bad()
		}
		return &LagLimit{Bytes: n}, nil
	}
	low := strings.ToLower(t)
	for _, u := range sizeUnits {
		num, ok := strings.CutSuffix(low, u.suffix)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
		if err != nil || n < 0 || n > (1<<62)/u.mult {
			return nil, bad()
		}
		return &LagLimit{Bytes: n * u.mult}, nil
	}
	d, err := time.ParseDuration(t)
	if err != nil || d < 0 {
		return nil, bad()
	}
	return &LagLimit{Bytes: -1, Duration: d}, nil
}

func (l LagLimit) String() string {
	if l.Bytes >= 0 {
		return fmt.Sprintf("%d bytes", l.Bytes)
	}
	return l.Duration.String()
}
