package pgops

import "testing"

func TestParseProgramVersion(t *testing.T) {
	for out, want := range map[string]int{
		"postgres (PostgreSQL) 17.12 (Debian 17.12-0+deb13u1)\n": 17,
		"pg_ctl (PostgreSQL) 18.6 (Debian 18.6-3)":               18,
		"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)":   15,
		"initdb (PostgreSQL) 19devel":                            19,
		"postgres (PostgreSQL) 18beta1":                          18,
		"postgres (PostgreSQL) 9.6.24":                           906,
	} {
		got, err := ParseProgramVersion(out)
		if err != nil || got != want {
			t.Errorf("ParseProgramVersion(%q) = %d, %v; want %d", out, got, err, want)
		}
	}
	if _, err := ParseProgramVersion("bash: postgres: command not found"); err == nil {
		t.Error("a shell's error was read as a version")
	}
}

func TestMajorOfVersionNum(t *testing.T) {
	for num, want := range map[string]int{"170012": 17, "180006": 18, "150018": 15, "90624": 906} {
		if got, err := MajorOfVersionNum(num); err != nil || got != want {
			t.Errorf("MajorOfVersionNum(%s) = %d, %v; want %d", num, got, err, want)
		}
	}
	if _, err := MajorOfVersionNum(""); err == nil {
		t.Error("an empty server_version_num was read")
	}
}
