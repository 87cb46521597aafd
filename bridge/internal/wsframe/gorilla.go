package wsframe

import (
	"bufio"
	"reflect"

	"github.com/gorilla/websocket"
)

var bufioReaderType = reflect.TypeFor[*bufio.Reader]()

// gorillaReader returns gorilla's read buffer of ws (its unexported br
// field), or nil when the field is not there or not a *bufio.Reader.
func gorillaReader(ws *websocket.Conn) *bufio.Reader {
	f := reflect.ValueOf(ws).Elem().FieldByName("br")
	if !f.IsValid() || f.Type() != bufioReaderType || f.IsNil() {
		return nil
	}
	return (*bufio.Reader)(f.UnsafePointer())
}
