package pgops

import (
	"fmt"
	"regexp"
	"strconv"
)

// programVersionRE reads what a PostgreSQL program prints for --version:
// "postgres (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)", "pg_ctl
// (PostgreSQL) 18.6", "initdb (PostgreSQL) 19devel", "postgres (PostgreSQL)
// 9.6.24". From 10 on the first number is the major; before, the first two.
var programVersionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)(?:\.(\d+))?`)

// ParseProgramVersion is the major version in a program's --version output.
func ParseProgramVersion(out string) (int, error) {
	m := programVersionRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("%q is not a PostgreSQL program's version", firstLineOf(out))
	}
	major, _ := strconv.Atoi(m[1])
	if major < 10 && m[2] != "" {
		minor, _ := strconv.Atoi(m[2])
		return major*100 + minor, nil // 9.6 → 906, as server_version_num/100 has it
	}
	return major, nil
}

// MajorOfVersionNum is the major in server_version_num (170012 → 17; 90624 → 906).
func MajorOfVersionNum(num string) (int, error) {
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("server_version_num %q is not a number", num)
	}
	if n >= 100000 {
		return n / 10000, nil
	}
	return n / 100, nil
}

func firstLineOf(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
