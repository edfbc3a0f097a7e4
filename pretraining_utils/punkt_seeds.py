"""Built-in abbreviation lists that seed Punkt's learned parameters, per language.

Punkt learns abbreviations from the text it is trained on, but a sample of a few MB cannot
show it every abbreviation a large corpus uses, and a tiny corpus teaches it almost nothing.
These hand-written lists are added to whatever it learns.

Entries follow Punkt's own convention: lower case, without the final period, and an
abbreviation with inner periods written with them (``e.g.`` -> ``"e.g"``, ``m.in.`` -> ``"m.in"``).
Abbreviations that are also common words are left out on purpose (English "art", "sat",
"in"; Polish "lek", "sen", "marsz"; German "Art"), and so are Polish units correctly written
without a period ("zł", "mln"): a period after those usually ends the sentence, and a seed is
an abbreviation whatever the context. "no" (English) and "gen" (Polish) stay, because "No. 5"
and "gen. Anders" are too common to lose; see ``SENTENCE_FINAL_ABBREVIATIONS`` for "no".
"""

from __future__ import annotations

#: Languages nltk ships Punkt models for; ``--lang`` accepts exactly these names.
PUNKT_LANGUAGES: tuple[str, ...] = (
    "czech",
    "danish",
    "dutch",
    "english",
    "estonian",
    "finnish",
    "french",
    "german",
    "greek",
    "italian",
    "malayalam",
    "norwegian",
    "polish",
    "portuguese",
    "russian",
    "slovene",
    "spanish",
    "swedish",
    "turkish",
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_ENGLISH = _words(
    """
    mr mrs ms messrs dr prof rev hon gen col lt sgt capt cmdr maj adm gov sen rep pres supt
    st jr sr esq
    e.g i.e etc vs viz cf al ca approx a.m p.m ibid op cit n.b a.k.a
    inc ltd co corp bros assn dept univ est govt intl
    no nos fig figs vol vols p pp ch chap sec ed eds eq eqs ref refs para pt ser suppl
    jan feb mar apr jun jul aug sep sept oct nov dec
    ave blvd rd mt ft apt lb lbs oz hr hrs
    u.s u.k u.n e.u b.c a.d ph.d
    """
)

_POLISH = _words(
    """
    np tzw tzn tj itd itp m.in ok wg im ww jw cdn cd c.d c.d.n dot zob por ang łac niem franc
    wł hiszp ukr czes etc in
    dr prof hab inż mgr lic doc med wet red ks bp abp kard o św bł śp ś.p
    gen płk ppłk mjr kpt ppor chor sierż plut kpr szer adm kmdr
    min pos prez dyr kier zast przew mec adw tow ob p pp
    st mł jun ur zm ds wsp zw pt br ub b.r ub.r dn
    ul al pl os woj pow gm m.st pn pd płn płd wsch zach
    n.p.m p.p.m p.n.e n.e r w s t
    godz sek tys proc
    wyd tłum oprac przyp tab rys zał poz pkt ust art rozdz str nr cz tel dz dz.u kl pok lok
    sp o.o s.a sp.j
    pon wt śr czw sob niedz
    """
)

_GERMAN = _words(
    """
    z.b d.h u.a z.t u.u o.ä u.ä s.o s.u u.v.m i.d.r v.a bzw usw etc ca vgl sog ggf evtl inkl
    bspw zzgl dr prof dipl ing med phil jur rer nat hr fr frl nr str s abs bd hrsg jh jhd
    mio mrd tsd st hl gebr geb gest verh std abt abb tab kap anm
    jan feb apr aug sept sep okt nov dez
    """
)

_FRENCH = _words(
    """
    m mm mme mmes mlle mlles dr pr me st ste av bd p pp cf ex éd vol no fig env p.ex c.-à-d
    etc cie ibid op cit chap coll sq sqq tél janv févr avr juil sept oct nov déc
    """
)

_CZECH = _words(
    """
    např tzv tj tzn atd apod aj mj resp popř př viz srov str s č čís tel ul nám r
    ing mgr mudr judr phdr rndr bc doc prof dr csc drsc ph.d p pí sv
    gen plk mjr kpt por tis mil mld hod min st stol příp event odst písm zák sb čl obr tab kap
    odd roč vyd red ed
    """
)

_SPANISH = _words(
    """
    sr sra srta dr dra lic ing prof etc pág págs p pp núm vol cap art ej aprox av avda cía
    dpto ee.uu fig gral ud uds vd vds sto sta s.a s.l a.c d.c dña atte tel
    """
)

#: Seed abbreviations per language; a language without an entry gets none.
ABBREVIATIONS: dict[str, frozenset[str]] = {
    "english": _ENGLISH,
    "polish": _POLISH,
    "german": _GERMAN,
    "french": _FRENCH,
    "czech": _CZECH,
    "spanish": _SPANISH,
}

#: Abbreviations that usually close a list or a clause ("etc.", "itd."): followed by a
#: capitalised word they end the sentence, since Punkt would otherwise never split after a
#: known abbreviation without statistical evidence it only gets from a large sample.
SENTENCE_FINAL_ABBREVIATIONS: dict[str, frozenset[str]] = {
    "english": _words("etc no"),
    "polish": _words("itd itp etc in cdn ok"),
    "german": _words("usw etc"),
    "french": _words("etc"),
    "czech": _words("atd apod etc"),
    "spanish": _words("etc"),
}


def seed_abbreviations(lang: str) -> frozenset[str]:
    """The built-in abbreviations for ``lang`` (empty for a language without a list)."""
    return ABBREVIATIONS.get(lang, frozenset())


def sentence_final_abbreviations(lang: str) -> frozenset[str]:
    """Abbreviations of ``lang`` that end the sentence when a capitalised word follows."""
    return SENTENCE_FINAL_ABBREVIATIONS.get(lang, frozenset())
