package realtime

import (
	"reflect"
	"strings"
	"testing"
)

// TestEventFieldsCoverServerEvent: the fast path checks the type of every
// member of ServerEvent (a member it did not know could carry a value
// encoding/json rejects, or fold onto a key it reads); adding a field to
// ServerEvent without listing it in eventFields fails here.
func TestEventFieldsCoverServerEvent(t *testing.T) {
	typ := reflect.TypeFor[ServerEvent]()
	if typ.NumField() != len(eventFields) {
		t.Fatalf("ServerEvent has %d fields, eventFields %d", typ.NumField(), len(eventFields))
	}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		bit, kind := eventField([]byte(strings.ToLower(name)))
		want := kindObject
		switch f.Type.Kind() {
		case reflect.String:
			want = kindString
		case reflect.Int:
			want = kindInt
		}
		if bit == 0 || kind != want {
			t.Errorf("field %s (%s): listed with kind %d, want %d", f.Name, name, kind, want)
		}
	}
	if eventFields[0].name != "type" || eventFields[1].name != "item_id" || eventFields[2].name != "delta" {
		t.Fatal("evType, evItemID and evDelta are the first three bits")
	}
}

func TestScanAudioDeltaDefers(t *testing.T) {
	for name, in := range map[string]string{
		"type repeated in another case": `{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","TYPE":"error"}`,
		"delta repeated":                `{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","Delta":"BBBB"}`,
		"long s key":                    `{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","tran` + "\u017f" + `cript":1}`,
		"int field not an int":          `{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","audio_end_ms":1.5}`,
		"object field not null":         `{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","item":{}}`,
		"invalid skipped literal":       `{"type":"response.output_audio.delta","item_id":"i","delta":"AAAA","x":nul}`,
		"empty item id":                 `{"type":"response.output_audio.delta","item_id":"","delta":"AAAA"}`,
	} {
		if _, _, _, ok := ScanAudioDelta([]byte(in)); ok {
			t.Errorf("%s: read on the fast path: %s", name, in)
		}
	}
	in := `{"TYPE":"response.output_audio.delta","Item_Id":"i","DELTA":"AAAA","audio_end_ms":-5,"event_id":null,"output_index":0}`
	if typ, item, delta, ok := ScanAudioDelta([]byte(in)); !ok || string(typ) != TypeAudioDelta || string(item) != "i" || string(delta) != "AAAA" {
		t.Errorf("keys in other cases, as encoding/json reads them: ok=%v %q %q %q", ok, typ, item, delta)
	}
}
