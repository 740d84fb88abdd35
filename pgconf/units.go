package pgconf

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Units of the settings table: the memory and time units PostgreSQL
// accepts in settings (PostgreSQL docs, config-setting.html), so a value
// written in the settings file can be compared with pg_settings.
var memUnits = map[string]int64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
var timeUnits = map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second,
	"min": time.Minute, "h": time.Hour, "d": 24 * time.Hour}

// ParseSize reads a memory setting such as "10GB" or "512MB" into bytes.
// A bare number is in defaultUnit (MB for max_slot_wal_keep_size).
func ParseSize(v string, defaultUnit string) (int64, error) {
	num, unit := splitUnit(strings.Trim(v, "'"))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size such as 10GB", v)
	}
	if unit == "" {
		unit = defaultUnit
	}
	m, ok := memUnits[unit]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q (use kB, MB, GB or TB)", v, unit)
	}
	if n < 0 {
		return n, nil
	}
	return n * m, nil
}

func splitUnit(v string) (string, string) {
	v = strings.TrimSpace(v)
	i := len(v)
	for i > 0 && (v[i-1] < '0' || v[i-1] > '9') {
		i--
	}
	return strings.TrimSpace(v[:i]), strings.TrimSpace(v[i:])
}

// SameSetting reports whether a value written in a settings file means the
// same as pg_settings' setting column, which is in the setting's base unit
// (e.g. "10GB" and setting "10240" with unit "MB").
func SameSetting(want, setting, unit string) bool {
	want = strings.Trim(want, "'")
	if want == setting {
		return true
	}
	switch strings.ToLower(want) {
	case "on", "true", "yes", "1":
		return setting == "on"
	case "off", "false", "no", "0":
		return setting == "off"
	}
	if unit == "" {
		return false
	}
	base, baseUnit := splitUnit(unit) // "8kB" -> 8, "kB"; "MB" -> "", "MB"
	mult := int64(1)
	if base != "" {
		mult, _ = strconv.ParseInt(base, 10, 64)
	}
	got, err := strconv.ParseInt(setting, 10, 64)
	if err != nil {
		return false
	}
	if m, ok := memUnits[baseUnit]; ok {
		w, err := ParseSize(want, baseUnit)
		return err == nil && ((w < 0 && w == got) || (w >= 0 && w == got*mult*m))
	}
	if d, ok := timeUnits[baseUnit]; ok {
		num, u := splitUnit(want)
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return false
		}
		if u == "" {
			return n == got
		}
		wu, ok := timeUnits[u]
		return ok && time.Duration(n)*wu == time.Duration(got)*d
	}
	return false
}
