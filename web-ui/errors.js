// Meter errors in plain words, both languages: fetched the first time a page has a failing meter
// to describe (see S.errorWords).
"use strict";
S.addTexts({
  it: {
      err_timeout: "nessuna risposta entro il tempo limite", err_crc: "risposta danneggiata (CRC errato)",
      err_frame: "risposta incompleta o non valida", err_exception: "il contatore rifiuta la richiesta (eccezione Modbus {code}: {name})",
      err_refused: "connessione rifiutata: nessun servizio all'indirizzo", err_unreachable: "indirizzo non raggiungibile: la connessione non si stabilisce",
      err_closed: "connessione interrotta", err_port: "porta seriale non disponibile", err_transport: "errore di comunicazione",
      err_not_available: "il contatore segnala un valore non disponibile", err_implausible: "valore letto non plausibile",
      err_setup: "contatore non configurabile (modello sconosciuto o rilevamento non riuscito)",
      exc_1: "funzione non supportata", exc_2: "indirizzo di registro non valido", exc_3: "valore non valido",
      exc_4: "guasto del dispositivo", exc_5: "richiesta in elaborazione", exc_6: "dispositivo occupato",
  },
  en: {
    err_timeout: "no answer within the timeout", err_crc: "damaged answer (bad CRC)",
    err_frame: "incomplete or invalid answer", err_exception: "the meter refuses the request (Modbus exception {code}: {name})",
    err_refused: "connection refused: nothing listens at the address", err_unreachable: "address unreachable: the connection is never made",
    err_closed: "connection closed", err_port: "serial port unavailable", err_transport: "communication error",
    err_not_available: "the meter reports a value as not available", err_implausible: "implausible value read",
    err_setup: "meter cannot be set up (unknown model or discovery failed)",
    exc_1: "illegal function", exc_2: "illegal data address", exc_3: "illegal data value",
    exc_4: "server device failure", exc_5: "acknowledge", exc_6: "server device busy",
    exc_10: "gateway path unavailable", exc_11: "gateway target failed to respond", exc_other: "unknown code",
  },
});
