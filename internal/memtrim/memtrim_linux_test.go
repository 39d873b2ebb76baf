//go:build linux

package memtrim

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlySpans_PicksPrivateReadOnlyMappingsOfThePath(t *testing.T) {
	clean := "Rss:                 720 kB\nAnonymous:             0 kB\nSwap:                  0 kB\nVmFlags: rd ex mr mw me dw\n"
	relocated := "Rss:                   4 kB\nAnonymous:             4 kB\nSwap:                  0 kB\nVmFlags: rd mr mw me ac\n"
	swapped := "Rss:                   0 kB\nAnonymous:             0 kB\nSwap:                  4 kB\n"
	smaps := "00400000-00411000 r--p 00000000 fe:01 123 /opt/chiffon/bin/chiffon\n" + clean +
		"00411000-00c80000 r-xp 00011000 fe:01 123 /opt/chiffon/bin/chiffon\n" + clean +
		"00c80000-01615000 r--p 00880000 fe:01 123 /opt/chiffon/bin/chiffon\n" + clean +
		// The relocated GOT (RELRO): read-only now, but written at start.
		"01615000-01616000 r--p 01214000 fe:01 123 /opt/chiffon/bin/chiffon\n" + relocated +
		"01616000-01687000 rw-p 01215000 fe:01 123 /opt/chiffon/bin/chiffon\n" + relocated +
		"01687000-036cd000 rw-p 00000000 00:00 0\n" + relocated +
		"7f2a5e053000-7f2a5e079000 r--p 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6\n" + clean +
		"7f2a5e100000-7f2a5e101000 r--s 00000000 fe:01 123 /opt/chiffon/bin/chiffon\n" + clean +
		"7f2a5e180000-7f2a5e181000 r--p 00000000 fe:01 123 /opt/chiffon/bin/chiffon\n" + swapped +
		"7f2a5e200000-7f2a5e201000 r--p 00000000 fe:01 789 /opt/chiffon/bin/chiffon (deleted)\n" + clean
	got, err := readOnlySpans(strings.NewReader(smaps), "/opt/chiffon/bin/chiffon")
	if err != nil {
		t.Fatal(err)
	}
	want := []span{{0x400000, 0x411000}, {0x411000, 0xc80000}, {0xc80000, 0x1615000}}
	if len(got) != len(want) {
		t.Fatalf("spans = %#x, want %#x (no relocated, swapped, writable, shared, other-file or anonymous mapping)", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("span %d = %#x, want %#x", i, got[i], want[i])
		}
	}
}

func TestReadOnlySpans_RejectsABadLine(t *testing.T) {
	if _, err := readOnlySpans(strings.NewReader("zz-00411000 r-xp 0 fe:01 1 /x\n"), "/x"); err == nil {
		t.Fatal("no error for a bad address range")
	}
}

// exeRSS sums the resident kB of this process's mappings of its executable.
func exeRSS(t *testing.T, exe string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, ours := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			ours = len(fields) >= 6 && strings.Join(fields[5:], " ") == exe
		case ours && len(fields) >= 2 && fields[0] == "Rss:":
			kb, _ := strconv.Atoi(fields[1])
			total += kb
		}
	}
	return total
}

func TestExecutable_DropsResidentPagesAndTheProcessRunsOn(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	before := exeRSS(t, exe)
	n, err := Executable()
	if err != nil {
		t.Fatal(err)
	}
	after := exeRSS(t, exe) // runs code and reads tables: they fault back in
	t.Logf("executable resident: %d kB before, %d kB after (%d bytes advised)", before, after, n)
	if n <= 0 {
		t.Fatalf("advised %d bytes of the executable, want its read-only mappings", n)
	}
	if after >= before {
		t.Fatalf("executable resident %d kB after the trim, %d kB before: nothing dropped", after, before)
	}
	// Code and read-only data still work after they were dropped.
	if got := strings.Repeat("ab", 3) + strconv.Itoa(42); got != "ababab42" {
		t.Fatalf("got %q", got)
	}
}
