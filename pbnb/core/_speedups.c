/* C twins of the codec's hot loops: the two walks it runs on every nested value
 * (scan_value, tree_depth_exceeds), the copy that tags a value's lists for the
 * tuples-first layout (tag_lists), the packer's and unpacker's hooks for
 * tuples and datetimes (PlainDefault, PlainHooks), and the hash-flooding guard
 * (HashGuard).
 *
 * pbnb/core/serialize.py holds their Python twins and uses these when this
 * module was built; Pyodide and machines without a compiler use the Python ones.
 * tests/test_fuzz_codec.py holds both to the same answers.
 *
 * Both walks visit a container's children with its type's tp_traverse, as
 * gc.get_referents does for the Python twins, so both see the same children
 * (a dict's keys and values, a set's members, a list's or tuple's items).
 * Containers the garbage collector does not track hold only atoms, and
 * neither walk goes into them. The walks keep their own stack of containers
 * still to visit, so a deep value cannot overflow the C stack, and they run no
 * Python code while a container is being traversed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <datetime.h>

/* A growable array of borrowed references, each with a number: the depth it was
 * found at (tree_depth_exceeds), or how to visit it (scan_value). */
typedef struct {
    PyObject **items;
    Py_ssize_t *depths;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Stack;

static int
stack_grow(Stack *stack)
{
    Py_ssize_t capacity = stack->capacity ? stack->capacity * 2 : 64;
    PyObject **items = PyMem_Realloc(stack->items, capacity * sizeof(PyObject *));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    stack->items = items;
    Py_ssize_t *depths = PyMem_Realloc(stack->depths, capacity * sizeof(Py_ssize_t));
    if (depths == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    stack->depths = depths;
    stack->capacity = capacity;
    return 0;
}

static inline int
stack_push(Stack *stack, PyObject *obj, Py_ssize_t depth)
{
    if (stack->size == stack->capacity && stack_grow(stack) < 0) {
        return -1;
    }
    stack->items[stack->size] = obj;
    stack->depths[stack->size] = depth;
    stack->size++;
    return 0;
}

static void
stack_free(Stack *stack)
{
    PyMem_Free(stack->items);
    PyMem_Free(stack->depths);
}

/* A set of addresses (open addressing, linear probing, never more than half full). */
typedef struct {
    uintptr_t *slots;
    size_t mask;
    size_t size;
} AddressSet;

static size_t
address_hash(uintptr_t address)
{
    /* Objects are 16-byte aligned: drop the low bits, then mix. */
    uint64_t x = (uint64_t)(address >> 4);
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

/* Add ``address``: 1 if it was there already, 0 if added, -1 on error. */
static int
address_set_add(AddressSet *set, uintptr_t address)
{
    if (set->slots == NULL || (set->size + 1) * 2 > set->mask + 1) {
        size_t capacity = set->slots ? (set->mask + 1) * 2 : 64;
        uintptr_t *slots = PyMem_Calloc(capacity, sizeof(uintptr_t));
        if (slots == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (set->slots != NULL) {
            for (size_t i = 0; i <= set->mask; i++) {
                uintptr_t old = set->slots[i];
                if (old) {
                    size_t j = address_hash(old) & (capacity - 1);
                    while (slots[j]) {
                        j = (j + 1) & (capacity - 1);
                    }
                    slots[j] = old;
                }
            }
            PyMem_Free(set->slots);
        }
        set->slots = slots;
        set->mask = capacity - 1;
    }
    size_t i = address_hash(address) & set->mask;
    while (set->slots[i]) {
        if (set->slots[i] == address) {
            return 1;
        }
        i = (i + 1) & set->mask;
    }
    set->slots[i] = address;
    set->size++;
    return 0;
}

static int
is_plain_container(PyTypeObject *kind)
{
    return kind == &PyList_Type || kind == &PyDict_Type || kind == &PyTuple_Type
        || kind == &PySet_Type || kind == &PyFrozenSet_Type;
}

static int
is_atom(PyTypeObject *kind)
{
    return kind == &PyLong_Type || kind == &PyUnicode_Type || kind == &PyFloat_Type
        || kind == &PyBool_Type || kind == Py_TYPE(Py_None) || kind == &PyBytes_Type;
}

/* Whether an object only one slot of its parent refers to can be told from its
 * reference count. Not in the free-threaded build, whose counts are split
 * between threads: there every container's address is remembered. */
#ifdef Py_GIL_DISABLED
#define ONLY_ITS_PARENT_HOLDS(obj) 0
#else
#define ONLY_ITS_PARENT_HOLDS(obj) (Py_REFCNT(obj) == 1)
#endif

/* ---- scan_value ----------------------------------------------------------- */

/* What scan_value finds a value to be: serialize.SCAN_TREE, SCAN_GRAPH, SCAN_TUPLE_TREE. */
enum { SCAN_TREE = 0, SCAN_GRAPH = 1, SCAN_TUPLE_TREE = 2 };

typedef struct {
    PyObject *leaves;   /* frozenset of the types that are leaves (atoms, datetimes, ...) */
    AddressSet seen;    /* containers met so far that something else may also hold */
    Stack pending;      /* tracked containers whose children are still to visit */
    PyObject *others;   /* list of the types outside both sets met in one container */
    int found;          /* 1 once a repeat is met */
    int flavors;        /* 1 once a leaf flavor (a reference) is met */
    int counting;       /* 1 inside an untracked container: counting tuples only */
    Py_ssize_t depth;   /* of the container being traversed (the root's is 1) */
    Py_ssize_t deepest; /* the deepest container met */
    Py_ssize_t lists;   /* lists and tuples met, the root included */
    Py_ssize_t tuples;
} GraphScan;

/* How a container on the pending stack is visited: its slot holds its depth
 * times two, plus one of these. */
enum { VISIT_ALL = 0, COUNT_TUPLES = 1 };

/* The value's containers nest at most this deep to go tuples-first (as in
 * serialize.MAX_TUPLES_FIRST_DEPTH): tag_lists recurses. */
#define MAX_TUPLES_FIRST_DEPTH 100

/* Push ``child``, a container found at ``depth``. */
static inline int
push_child(GraphScan *scan, PyObject *child, Py_ssize_t depth, int how)
{
    if (depth > scan->deepest) {
        scan->deepest = depth;
    }
    return stack_push(&scan->pending, child, depth * 2 + how) < 0 ? 1 : 0;
}

/* An untracked tuple or dict holds only atoms and untracked tuples and dicts:
 * nothing to remember, but its tuples count, whatever the collector untracked. */
static int
untracked_container(PyTypeObject *kind)
{
    return kind == &PyTuple_Type || kind == &PyDict_Type;
}

/* What visiting an untracked tuple with COUNT_TUPLES would do, without the
 * stack and the traverse: most are small tuples of atoms. */
static int
count_in_tuple(GraphScan *scan, PyObject *tuple)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyTypeObject *kind = Py_TYPE(PyTuple_GET_ITEM(tuple, i));
        if (untracked_container(kind)) {
            scan->tuples += kind == &PyTuple_Type;
            /* The tuple is a child of the container being traversed: its items are two deeper. */
            if (push_child(scan, PyTuple_GET_ITEM(tuple, i), scan->depth + 2, COUNT_TUPLES)) {
                return 1;
            }
        }
    }
    return 0;
}

static int
graph_visit(PyObject *child, void *arg)
{
    GraphScan *scan = (GraphScan *)arg;
    PyTypeObject *kind = Py_TYPE(child);
    if (is_atom(kind)) {
        return 0;
    }
    if (scan->counting) {
        scan->tuples += kind == &PyTuple_Type;
        return untracked_container(kind) ? push_child(scan, child, scan->depth + 1, COUNT_TUPLES) : 0;
    }
    if (is_plain_container(kind)) {
        scan->lists += kind == &PyList_Type;
        scan->tuples += kind == &PyTuple_Type;
        if (!ONLY_ITS_PARENT_HOLDS(child)) {
            int repeated = address_set_add(&scan->seen, (uintptr_t)child);
            if (repeated) {
                scan->found = repeated > 0;
                return 1;  /* stop: a repeat, or an error */
            }
        }
        if (PyObject_GC_IsTracked(child)) {
            return push_child(scan, child, scan->depth + 1, VISIT_ALL);
        }
        if (kind == &PyDict_Type) {
            return push_child(scan, child, scan->depth + 1, COUNT_TUPLES);
        }
        if (scan->depth + 1 > scan->deepest) {
            scan->deepest = scan->depth + 1;
        }
        return kind == &PyTuple_Type ? count_in_tuple(scan, child) : 0;
    }
    /* A leaf type, or one to ask about once this container is done (asking runs
     * Python code, which must not run while the container is traversed: nor may
     * hashing a type whose metaclass is not ``type``, and no leaf's is). */
    if (Py_IS_TYPE((PyObject *)kind, &PyType_Type)) {
        int leaf = PySet_Contains(scan->leaves, (PyObject *)kind);
        if (leaf) {
            return leaf < 0 ? 1 : 0;
        }
    }
    return PyList_Append(scan->others, (PyObject *)kind) < 0 ? 1 : 0;
}

/* 1 when every type in ``others`` is a leaf flavor, 0 if one is not, -1 on error. */
static int
all_leaf_flavors(PyObject *others, PyObject *is_leaf_flavor)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(others); i++) {
        PyObject *answer = PyObject_CallOneArg(is_leaf_flavor, PyList_GET_ITEM(others, i));
        if (answer == NULL) {
            return -1;
        }
        int truth = PyObject_IsTrue(answer);
        Py_DECREF(answer);
        if (truth <= 0) {
            return truth;
        }
    }
    return 1;
}

/* SCAN_TUPLE_TREE for a tree holding more tuples than lists, no reference
 * (msgpack packs a reference's subclass of a builtin as that builtin when
 * tuples pack as they are) and no deep nesting, else SCAN_TREE. */
static PyObject *
tree_layout(GraphScan *scan)
{
    int tuples_first = scan->tuples > scan->lists && !scan->flavors
        && scan->deepest <= MAX_TUPLES_FIRST_DEPTH;
    return PyLong_FromLong(tuples_first ? SCAN_TUPLE_TREE : SCAN_TREE);
}

static PyObject *
scan_value(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "scan_value(leaves, is_leaf_flavor, root)");
        return NULL;
    }
    PyObject *leaves = args[0], *is_leaf_flavor = args[1], *root = args[2];
    if (!PyAnySet_Check(leaves)) {
        PyErr_SetString(PyExc_TypeError, "leaves must be a set or frozenset of types");
        return NULL;
    }
    PyTypeObject *kind = Py_TYPE(root);
    if (is_atom(kind)) {
        return PyLong_FromLong(SCAN_TREE);
    }
    if (!is_plain_container(kind)) {
        int leaf = PySet_Contains(leaves, (PyObject *)kind);
        if (leaf < 0) {
            return NULL;
        }
        if (leaf) {
            return PyLong_FromLong(SCAN_TREE);
        }
        PyObject *flavor = PyObject_CallOneArg(is_leaf_flavor, (PyObject *)kind);
        if (flavor == NULL) {
            return NULL;
        }
        int truth = PyObject_IsTrue(flavor);
        Py_DECREF(flavor);
        if (truth < 0) {
            return NULL;
        }
        return PyLong_FromLong(truth ? SCAN_TREE : SCAN_GRAPH);
    }
    GraphScan scan = {
        .leaves = leaves, .deepest = 1, .lists = kind == &PyList_Type, .tuples = kind == &PyTuple_Type};
    int tracked = PyObject_GC_IsTracked(root);
    if (!tracked && !untracked_container(kind)) {
        return tree_layout(&scan);
    }
    scan.others = PyList_New(0);
    if (scan.others == NULL) {
        return NULL;
    }
    int failed = address_set_add(&scan.seen, (uintptr_t)root) < 0
        || stack_push(&scan.pending, root, 1 * 2 + (tracked ? VISIT_ALL : COUNT_TUPLES)) < 0;
    while (!failed && !scan.found && scan.pending.size) {
        scan.pending.size--;
        PyObject *container = scan.pending.items[scan.pending.size];
        scan.counting = scan.pending.depths[scan.pending.size] % 2 == COUNT_TUPLES;
        scan.depth = scan.pending.depths[scan.pending.size] / 2;
        if (Py_TYPE(container)->tp_traverse(container, graph_visit, &scan)) {
            failed = !scan.found;
            break;
        }
        if (PyList_GET_SIZE(scan.others)) {
            int leaves_only = all_leaf_flavors(scan.others, is_leaf_flavor);
            failed = leaves_only < 0;
            scan.found = leaves_only == 0;
            scan.flavors = 1;
            failed = failed || PyList_SetSlice(scan.others, 0, PY_SSIZE_T_MAX, NULL) < 0;
        }
    }
    stack_free(&scan.pending);
    PyMem_Free(scan.seen.slots);
    Py_DECREF(scan.others);
    if (failed) {
        return NULL;
    }
    return scan.found ? PyLong_FromLong(SCAN_GRAPH) : tree_layout(&scan);
}

/* ---- tag_lists ------------------------------------------------------------ */

static PyObject *tagged_list(PyObject *, PyObject *, int);
static PyObject *tagged_tuple(PyObject *, PyObject *, int);
static PyObject *tagged_dict(PyObject *, PyObject *, int);

/* A copy of the tree ``obj`` with each list made a tuple ``(list_tag, *items)``,
 * sharing every part that holds no list; NULL with ValueError past ``depth_left``. */
static PyObject *
tagged(PyObject *obj, PyObject *list_tag, int depth_left)
{
    PyTypeObject *kind = Py_TYPE(obj);
    if (kind != &PyList_Type && kind != &PyTuple_Type && kind != &PyDict_Type) {
        return Py_NewRef(obj);  /* an atom or leaf, or a set (whose members hold no list) */
    }
    if (!PyObject_GC_IsTracked(obj)) {
        return Py_NewRef(obj);  /* atoms only */
    }
    if (depth_left == 0) {
        PyErr_SetString(PyExc_ValueError, "too deep for the tuples-first layout");
        return NULL;
    }
    if (kind == &PyList_Type) {
        return tagged_list(obj, list_tag, depth_left - 1);
    }
    if (kind == &PyTuple_Type) {
        return tagged_tuple(obj, list_tag, depth_left - 1);
    }
    return tagged_dict(obj, list_tag, depth_left - 1);
}

/* tagged() of an item, of which most are atoms. */
static inline PyObject *
tagged_item(PyObject *item, PyObject *list_tag, int depth_left)
{
    return is_atom(Py_TYPE(item)) ? Py_NewRef(item) : tagged(item, list_tag, depth_left);
}

static PyObject *
tagged_list(PyObject *obj, PyObject *list_tag, int depth_left)
{
    Py_ssize_t size = PyList_GET_SIZE(obj);
    PyObject *copy = PyTuple_New(size + 1);
    if (copy == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(copy, 0, Py_NewRef(list_tag));
    for (Py_ssize_t i = 0; i < size; i++) {
        /* Held while copied: an allocation may collect garbage, whose finalizers may
         * change the list (then the copy is refused, as msgpack refuses it). */
        PyObject *item = Py_NewRef(PyList_GET_ITEM(obj, i));
        PyObject *copied = tagged_item(item, list_tag, depth_left);
        Py_DECREF(item);
        if (copied == NULL || PyList_GET_SIZE(obj) != size) {
            if (copied != NULL) {
                Py_DECREF(copied);
                PyErr_SetString(PyExc_RuntimeError, "list changed size while being sent");
            }
            Py_DECREF(copy);
            return NULL;
        }
        PyTuple_SET_ITEM(copy, i + 1, copied);
    }
    return copy;
}

/* tagged() of a tuple: a copy once an item changes, else the tuple itself. */
static PyObject *
tagged_tuple(PyObject *obj, PyObject *list_tag, int depth_left)
{
    Py_ssize_t size = PyTuple_GET_SIZE(obj);
    PyObject *copy = NULL;
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *item = PyTuple_GET_ITEM(obj, i);  /* the tuple holds it: immutable */
        PyObject *copied = tagged_item(item, list_tag, depth_left);
        if (copied == NULL) {
            Py_XDECREF(copy);
            return NULL;
        }
        if (copy == NULL && copied != item) {
            copy = PyTuple_New(size);  /* at the first item that changes */
            if (copy == NULL) {
                Py_DECREF(copied);
                return NULL;
            }
            for (Py_ssize_t j = 0; j < i; j++) {
                PyTuple_SET_ITEM(copy, j, Py_NewRef(PyTuple_GET_ITEM(obj, j)));
            }
        }
        if (copy == NULL) {
            Py_DECREF(copied);
        }
        else {
            PyTuple_SET_ITEM(copy, i, copied);
        }
    }
    return copy ? copy : Py_NewRef(obj);
}

/* tagged() of a dict: a copy once a value changes, else the dict itself. */
static PyObject *
tagged_dict(PyObject *obj, PyObject *list_tag, int depth_left)
{
    PyObject *copy = NULL, *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(obj, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        PyObject *item = tagged_item(value, list_tag, depth_left);
        int failed = item == NULL;
        if (!failed && item != value) {
            if (copy == NULL) {
                copy = PyDict_Copy(obj);  /* at the first value that changes */
            }
            failed = copy == NULL || PyDict_SetItem(copy, key, item) < 0;
        }
        Py_DECREF(key);
        Py_DECREF(value);
        Py_XDECREF(item);
        if (failed) {
            Py_XDECREF(copy);
            return NULL;
        }
    }
    return copy ? copy : Py_NewRef(obj);
}

static PyObject *
tag_lists(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "tag_lists(root, list_tag, max_depth)");
        return NULL;
    }
    long max_depth = PyLong_AsLong(args[2]);
    if (max_depth == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (max_depth < 0 || max_depth > 1000) {
        PyErr_SetString(PyExc_ValueError, "max_depth must be within 0..1000 (the C stack's share)");
        return NULL;
    }
    return tagged(args[0], args[1], (int)max_depth);
}

/* ---- tree_depth_exceeds --------------------------------------------------- */

typedef struct {
    Stack pending;
    Py_ssize_t depth;      /* of the container being traversed */
    Py_ssize_t max_depth;
    int exceeded;
} DepthScan;

static int
holds_container(PyObject *tuple)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        if (is_plain_container(Py_TYPE(PyTuple_GET_ITEM(tuple, i)))) {
            return 1;
        }
    }
    return 0;
}

static int
depth_visit(PyObject *child, void *arg)
{
    DepthScan *scan = (DepthScan *)arg;
    PyTypeObject *kind = Py_TYPE(child);
    if (!is_plain_container(kind)) {
        return 0;
    }
    if (scan->depth >= scan->max_depth) {
        scan->exceeded = 1;
        return 1;
    }
    /* Tracked or not: a dict the collector does not track may still hold tuples,
     * and a tuple it untracked, tuples. A tuple of atoms adds nothing below itself. */
    if (kind == &PyTuple_Type && !holds_container(child)) {
        return 0;
    }
    return stack_push(&scan->pending, child, scan->depth + 1) < 0 ? 1 : 0;
}

static PyObject *
tree_depth_exceeds(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "tree_depth_exceeds(root, max_depth)");
        return NULL;
    }
    PyObject *root = args[0];
    Py_ssize_t max_depth = PyLong_AsSsize_t(args[1]);
    if (max_depth == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!is_plain_container(Py_TYPE(root))) {
        Py_RETURN_FALSE;
    }
    if (max_depth < 1) {
        Py_RETURN_TRUE;
    }
    DepthScan scan = {.max_depth = max_depth};
    int failed = stack_push(&scan.pending, root, 1) < 0;
    while (!failed && scan.pending.size) {
        scan.pending.size--;
        PyObject *container = scan.pending.items[scan.pending.size];
        scan.depth = scan.pending.depths[scan.pending.size];
        if (Py_TYPE(container)->tp_traverse(container, depth_visit, &scan)) {
            failed = !scan.exceeded;
            break;
        }
    }
    stack_free(&scan.pending);
    if (failed) {
        return NULL;
    }
    return PyBool_FromLong(scan.exceeded);
}

/* ---- tuples and datetimes: the packer's default and the unpacker's hooks ------
 *
 * A lists-first PLAIN payload carries a tuple as an array whose first item is
 * an empty "tuple" ext; a tuples-first one carries tuples as arrays and tags
 * its lists instead. A datetime is one ext of fixed layout (docs/protocol.md).
 * msgpack calls a hook per array or ext on each side; these are those
 * hooks' common cases in C, each handing anything else (and anything it would
 * refuse) to the Python method it stands in front of (Encoder._default,
 * Decoder.ext_hook, Decoder.list_hook), which then says what is wrong.
 */

/* The datetime layout: year (2 bytes), month, day, hour, minute, second (1 each),
 * microsecond (4), fold (1), big-endian; then, when aware, the UTC offset in
 * microseconds (8, signed). */
#define DATETIME_SIZE 12
#define OFFSET_SIZE 8

static void
put_be(unsigned char *out, unsigned long long value, int size)
{
    for (int i = size - 1; i >= 0; i--) {
        out[i] = (unsigned char)(value & 0xff);
        value >>= 8;
    }
}

static unsigned long long
get_be(const unsigned char *in, int size)
{
    unsigned long long value = 0;
    for (int i = 0; i < size; i++) {
        value = (value << 8) | in[i];
    }
    return value;
}

typedef struct {
    PyObject_HEAD
    PyObject *tag;       /* the ext written first in a tuple's array */
    PyObject *ext_type;  /* msgpack.ExtType */
    PyObject *datetime_code;
    PyObject *fallback;  /* callable(obj) for everything else */
    vectorcallfunc vectorcall;
} PlainDefault;

static PyObject *plain_default_vectorcall(PyObject *, PyObject *const *, size_t, PyObject *);

static PyObject *
tuple_array(PlainDefault *self, PyObject *obj)
{
    Py_ssize_t size = PyTuple_GET_SIZE(obj);
    PyObject *array = PyList_New(size + 1);
    if (array == NULL) {
        return NULL;
    }
    PyList_SET_ITEM(array, 0, Py_NewRef(self->tag));
    for (Py_ssize_t i = 0; i < size; i++) {
        PyList_SET_ITEM(array, i + 1, Py_NewRef(PyTuple_GET_ITEM(obj, i)));
    }
    return array;
}

/* The UTC offset of an aware datetime in microseconds into *micros: 1 when
 * found, 0 when its tzinfo gives none (the Python twin says why), -1 on error. */
static int
utc_offset(PyObject *obj, long long *micros)
{
    PyObject *offset = PyObject_CallMethod(obj, "utcoffset", NULL);
    if (offset == NULL) {
        return -1;
    }
    int found = PyDelta_Check(offset);
    if (found) {
        *micros = ((long long)PyDateTime_DELTA_GET_DAYS(offset) * 86400
                   + PyDateTime_DELTA_GET_SECONDS(offset)) * 1000000LL
            + PyDateTime_DELTA_GET_MICROSECONDS(offset);
    }
    Py_DECREF(offset);
    return found;
}

static PyObject *
datetime_ext(PlainDefault *self, PyObject *obj)
{
    unsigned char fields[DATETIME_SIZE + OFFSET_SIZE];
    Py_ssize_t size = DATETIME_SIZE;
    put_be(fields, PyDateTime_GET_YEAR(obj), 2);
    fields[2] = (unsigned char)PyDateTime_GET_MONTH(obj);
    fields[3] = (unsigned char)PyDateTime_GET_DAY(obj);
    fields[4] = (unsigned char)PyDateTime_DATE_GET_HOUR(obj);
    fields[5] = (unsigned char)PyDateTime_DATE_GET_MINUTE(obj);
    fields[6] = (unsigned char)PyDateTime_DATE_GET_SECOND(obj);
    put_be(fields + 7, PyDateTime_DATE_GET_MICROSECOND(obj), 4);
    fields[11] = (unsigned char)PyDateTime_DATE_GET_FOLD(obj);
    if (PyDateTime_DATE_GET_TZINFO(obj) != Py_None) {
        long long micros;
        int found = utc_offset(obj, &micros);
        if (found <= 0) {
            return found < 0 ? NULL : PyObject_CallOneArg(self->fallback, obj);
        }
        put_be(fields + DATETIME_SIZE, (unsigned long long)micros, OFFSET_SIZE);
        size += OFFSET_SIZE;
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)fields, size);
    if (data == NULL) {
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, self->datetime_code, data);
    Py_DECREF(data);
    if (pair == NULL) {
        return NULL;
    }
    /* tuple.__new__(ExtType, pair), as serialize._ext makes them. */
    PyObject *args = PyTuple_Pack(1, pair);
    Py_DECREF(pair);
    if (args == NULL) {
        return NULL;
    }
    PyObject *ext = PyTuple_Type.tp_new((PyTypeObject *)self->ext_type, args, NULL);
    Py_DECREF(args);
    return ext;
}

static PyObject *
plain_default_call(PlainDefault *self, PyObject *obj)
{
    if (PyTuple_CheckExact(obj)) {
        return tuple_array(self, obj);
    }
    if (PyDateTime_CheckExact(obj)) {
        return datetime_ext(self, obj);
    }
    return PyObject_CallOneArg(self->fallback, obj);
}

static PyObject *
plain_default_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *tag, *ext_type, *datetime_code, *fallback;
    if (!PyArg_ParseTuple(args, "OO!O!O:PlainDefault", &tag, &PyType_Type, &ext_type, &PyLong_Type,
                          &datetime_code, &fallback)) {
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)ext_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "ext_type must be a subclass of tuple (msgpack.ExtType)");
        return NULL;
    }
    PlainDefault *self = (PlainDefault *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->tag = Py_NewRef(tag);
        self->ext_type = Py_NewRef(ext_type);
        self->datetime_code = Py_NewRef(datetime_code);
        self->fallback = Py_NewRef(fallback);
        self->vectorcall = plain_default_vectorcall;
    }
    return (PyObject *)self;
}

static int
plain_default_traverse(PlainDefault *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tag);
    Py_VISIT(self->ext_type);
    Py_VISIT(self->datetime_code);
    Py_VISIT(self->fallback);
    return 0;
}

static int
plain_default_clear(PlainDefault *self)
{
    Py_CLEAR(self->tag);
    Py_CLEAR(self->ext_type);
    Py_CLEAR(self->datetime_code);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
plain_default_dealloc(PlainDefault *self)
{
    PyObject_GC_UnTrack(self);
    plain_default_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
plain_default_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "PlainDefault takes one object");
        return NULL;
    }
    return plain_default_call((PlainDefault *)self, args[0]);
}

static PyObject *
plain_default_tp_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(self, args, kwargs);
}

static PyTypeObject PlainDefaultType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pbnb.core._speedups.PlainDefault",
    .tp_doc = "PlainDefault(tuple_tag, ext_type, datetime_code, fallback): a packer's default "
              "that writes tuples as [tuple_tag, *items] and datetimes as their ext, and hands "
              "anything else to fallback.",
    .tp_basicsize = sizeof(PlainDefault),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(PlainDefault, vectorcall),
    .tp_call = plain_default_tp_call,
    .tp_new = plain_default_new,
    .tp_traverse = (traverseproc)plain_default_traverse,
    .tp_clear = (inquiry)plain_default_clear,
    .tp_dealloc = (destructor)plain_default_dealloc,
};

typedef struct {
    PyObject_HEAD
    PyObject *tags;           /* dict: ext code -> the tag object it decodes to */
    PyObject *tuple_tag;      /* tags' value for tuples */
    PyObject *list_tag;       /* ... and for lists (in a tuples-first payload) */
    PyObject *candidates;     /* the decoder's list of values that may become keys */
    Py_ssize_t free_candidates;
    PyObject *guard;          /* callable(): guards the candidates and clears the list */
    PyObject *ext_fallback;   /* callable(code, data): every ext that is not a tag */
    PyObject *list_fallback;  /* callable(items): every other tagged array */
    long datetime_code;
    PyObject *zone_for;       /* callable(micros): the fixed-offset zone, shared */
    long long zone_micros;    /* the offset of the last zone met, which most values share */
    PyObject *zone;           /* ... and that zone (NULL before the first) */
} PlainHooks;

/* The datetime of a datetime ext, or NULL with no error set when the Python twin
 * must read it (a bad length, a field out of range, an offset beyond a day). */
static PyObject *
read_datetime(PlainHooks *self, PyObject *data)
{
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (size != DATETIME_SIZE && size != DATETIME_SIZE + OFFSET_SIZE) {
        return NULL;
    }
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(data);
    PyObject *zone = Py_None;
    if (size > DATETIME_SIZE) {
        long long micros = (long long)get_be(in + DATETIME_SIZE, OFFSET_SIZE);
        if (self->zone == NULL || micros != self->zone_micros) {
            PyObject *number = PyLong_FromLongLong(micros);
            PyObject *found = number ? PyObject_CallOneArg(self->zone_for, number) : NULL;
            Py_XDECREF(number);
            if (found == NULL) {
                PyErr_Clear();
                return NULL;
            }
            Py_XSETREF(self->zone, found);
            self->zone_micros = micros;
        }
        zone = self->zone;
    }
    PyObject *value = PyDateTimeAPI->DateTime_FromDateAndTimeAndFold(
        (int)get_be(in, 2), in[2], in[3], in[4], in[5], in[6], (int)get_be(in + 7, 4), zone, in[11],
        PyDateTimeAPI->DateTimeType);
    if (value == NULL) {
        PyErr_Clear();
    }
    return value;
}

static PyObject *
plain_hooks_ext(PlainHooks *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "ext_hook(code, data)");
        return NULL;
    }
    PyObject *tag = PyDict_GetItemWithError(self->tags, args[0]);
    if (tag != NULL) {
        return Py_NewRef(tag);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (PyLong_CheckExact(args[0]) && PyLong_AsLong(args[0]) == self->datetime_code
        && PyBytes_CheckExact(args[1])) {
        PyObject *value = read_datetime(self, args[1]);
        if (value != NULL) {
            return value;
        }
    }
    return PyObject_Vectorcall(self->ext_fallback, args, 2, NULL);
}

/* ``tuple``, just decoded, made the caller's: counted for the guard if it may
 * collide, and untracked if it holds atoms only.
 *
 * It may collide when more than one item is not a str or bytes: strings hash
 * with a secret per-process salt, so with at most one item of another type, two
 * tuples of one shape share a hash only when that item's hashes are equal,
 * which a single value (an atom, or a guarded value) allows a few dozen times
 * at most. A tuple of atoms can be in no reference cycle: the collector would
 * untrack it at its first pass, and the depth check need not look into it. */
static PyObject *
counted_tuple(PlainHooks *self, PyObject *tuple)
{
    int chosen = 0, atoms_only = 1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyTypeObject *kind = Py_TYPE(PyTuple_GET_ITEM(tuple, i));
        chosen += kind != &PyUnicode_Type && kind != &PyBytes_Type;
        atoms_only &= is_atom(kind);
    }
    if (atoms_only) {
        PyObject_GC_UnTrack(tuple);
    }
    if (chosen <= 1) {
        return tuple;
    }
    /* It may become a dict key or a set member: the guard counts it. */
    if (PyList_Append(self->candidates, tuple) < 0) {
        Py_DECREF(tuple);
        return NULL;
    }
    if (PyList_GET_SIZE(self->candidates) > self->free_candidates) {
        PyObject *guarded = PyObject_CallNoArgs(self->guard);
        if (guarded == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        Py_DECREF(guarded);
    }
    return tuple;
}

static PyObject *
plain_hooks_list(PlainHooks *self, PyObject *items)
{
    if (!PyList_CheckExact(items) || PyList_GET_SIZE(items) == 0) {
        return Py_NewRef(items);
    }
    PyObject *first = PyList_GET_ITEM(items, 0);
    if (first != self->tuple_tag) {
        if (Py_TYPE(first) == Py_TYPE(self->tuple_tag)) {  /* another tag */
            return PyObject_CallOneArg(self->list_fallback, items);
        }
        return Py_NewRef(items);
    }
    Py_ssize_t size = PyList_GET_SIZE(items) - 1;
    PyObject *built = PyTuple_New(size);
    if (built == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        PyObject *item = PyList_GET_ITEM(items, i + 1);
        Py_INCREF(item);
        PyTuple_SET_ITEM(built, i, item);
    }
    return counted_tuple(self, built);
}

static PyObject *
plain_hooks_tuple(PlainHooks *self, PyObject *items)
{
    if (!PyTuple_CheckExact(items) || PyTuple_GET_SIZE(items) == 0) {
        return Py_NewRef(items);
    }
    PyObject *first = PyTuple_GET_ITEM(items, 0);
    if (first == self->list_tag) {
        Py_ssize_t size = PyTuple_GET_SIZE(items) - 1;
        PyObject *list = PyList_New(size);
        for (Py_ssize_t i = 0; list != NULL && i < size; i++) {
            PyList_SET_ITEM(list, i, Py_NewRef(PyTuple_GET_ITEM(items, i + 1)));
        }
        return list;
    }
    if (Py_TYPE(first) == Py_TYPE(self->list_tag)) {  /* another tag: as in a lists-first payload */
        PyObject *array = PySequence_List(items);
        PyObject *built = array ? PyObject_CallOneArg(self->list_fallback, array) : NULL;
        Py_XDECREF(array);
        return built;
    }
    return counted_tuple(self, Py_NewRef(items));
}

static PyObject *
plain_hooks_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *tags, *tuple_tag, *list_tag, *candidates, *guard, *ext_fallback, *list_fallback,
        *zone_for;
    Py_ssize_t free_candidates;
    long datetime_code;
    if (!PyArg_ParseTuple(args, "O!OOO!nOOOlO:PlainHooks", &PyDict_Type, &tags, &tuple_tag,
                          &list_tag, &PyList_Type, &candidates, &free_candidates, &guard,
                          &ext_fallback, &list_fallback, &datetime_code, &zone_for)) {
        return NULL;
    }
    PlainHooks *self = (PlainHooks *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->tags = Py_NewRef(tags);
        self->tuple_tag = Py_NewRef(tuple_tag);
        self->list_tag = Py_NewRef(list_tag);
        self->candidates = Py_NewRef(candidates);
        self->free_candidates = free_candidates;
        self->guard = Py_NewRef(guard);
        self->ext_fallback = Py_NewRef(ext_fallback);
        self->list_fallback = Py_NewRef(list_fallback);
        self->datetime_code = datetime_code;
        self->zone_for = Py_NewRef(zone_for);
    }
    return (PyObject *)self;
}

static int
plain_hooks_traverse(PlainHooks *self, visitproc visit, void *arg)
{
    Py_VISIT(self->tags);
    Py_VISIT(self->tuple_tag);
    Py_VISIT(self->list_tag);
    Py_VISIT(self->candidates);
    Py_VISIT(self->guard);
    Py_VISIT(self->ext_fallback);
    Py_VISIT(self->list_fallback);
    Py_VISIT(self->zone_for);
    Py_VISIT(self->zone);
    return 0;
}

static int
plain_hooks_clear(PlainHooks *self)
{
    Py_CLEAR(self->tags);
    Py_CLEAR(self->tuple_tag);
    Py_CLEAR(self->list_tag);
    Py_CLEAR(self->candidates);
    Py_CLEAR(self->guard);
    Py_CLEAR(self->ext_fallback);
    Py_CLEAR(self->list_fallback);
    Py_CLEAR(self->zone_for);
    Py_CLEAR(self->zone);
    return 0;
}

static void
plain_hooks_dealloc(PlainHooks *self)
{
    PyObject_GC_UnTrack(self);
    plain_hooks_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef plain_hooks_methods[] = {
    {"ext_hook", (PyCFunction)(void (*)(void))plain_hooks_ext, METH_FASTCALL,
     "The unpacker's ext_hook: a tag's object, or ext_fallback(code, data)."},
    {"list_hook", (PyCFunction)plain_hooks_list, METH_O,
     "A lists-first payload's list_hook: a tagged tuple built and counted, other tags to "
     "list_fallback."},
    {"tuple_hook", (PyCFunction)plain_hooks_tuple, METH_O,
     "A tuples-first payload's list_hook: a tagged list built, a tuple counted, other tags to "
     "list_fallback."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlainHooksType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pbnb.core._speedups.PlainHooks",
    .tp_doc = "PlainHooks(tags, tuple_tag, list_tag, candidates, free_candidates, guard, ext_fallback, "
              "list_fallback, datetime_code, zone_for): a PLAIN payload's unpacker hooks, "
              "tags, tuples and datetimes in C.",
    .tp_basicsize = sizeof(PlainHooks),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = plain_hooks_new,
    .tp_traverse = (traverseproc)plain_hooks_traverse,
    .tp_clear = (inquiry)plain_hooks_clear,
    .tp_dealloc = (destructor)plain_hooks_dealloc,
    .tp_methods = plain_hooks_methods,
};

/* ---- the hash-flooding guard ------------------------------------------------
 *
 * The C twin of serialize._HashGuard: counts the distinct values per hash in
 * one message, and refuses more than ``limit`` distinct values sharing one.
 * Hashes go in a table of our own, not a dict of int objects: a message of
 * small tuples makes one entry per tuple.
 */

typedef struct {
    Py_hash_t hash;
    PyObject *first;  /* the first value with this hash (NULL: a free slot) */
    PyObject *same;   /* list of the distinct values with it, once there are two */
} GuardSlot;

typedef struct {
    PyObject_HEAD
    GuardSlot *slots;
    size_t mask;
    size_t size;
    Py_ssize_t limit;
    PyObject *error;  /* the exception class a flood raises */
} HashGuard;

static GuardSlot *
guard_slot(GuardSlot *slots, size_t mask, Py_hash_t hash)
{
    size_t i = address_hash((uintptr_t)hash << 4) & mask;
    while (slots[i].first != NULL && slots[i].hash != hash) {
        i = (i + 1) & mask;
    }
    return &slots[i];
}

static int
guard_grow(HashGuard *self)
{
    size_t capacity = self->slots ? (self->mask + 1) * 2 : 64;
    GuardSlot *slots = PyMem_Calloc(capacity, sizeof(GuardSlot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; self->slots != NULL && i <= self->mask; i++) {
        if (self->slots[i].first != NULL) {
            *guard_slot(slots, capacity - 1, self->slots[i].hash) = self->slots[i];
        }
    }
    PyMem_Free(self->slots);
    self->slots = slots;
    self->mask = capacity - 1;
    return 0;
}

/* 1 when ``list`` holds an item equal to ``value``, 0 if not, -1 on error. */
static int
guard_holds(PyObject *list, PyObject *value)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        int equal = PyObject_RichCompareBool(PyList_GET_ITEM(list, i), value, Py_EQ);
        if (equal) {
            return equal;
        }
    }
    return 0;
}

static int
guard_add(HashGuard *self, PyObject *value)
{
    Py_hash_t hash = PyObject_Hash(value);
    if (hash == -1) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
            return -1;
        }
        PyErr_Clear();  /* unhashable: it cannot be a key or a set member */
        return 0;
    }
    if (self->slots == NULL || (self->size + 1) * 2 > self->mask + 1) {
        if (guard_grow(self) < 0) {
            return -1;
        }
    }
    GuardSlot *slot = guard_slot(self->slots, self->mask, hash);
    if (slot->first == NULL) {
        slot->hash = hash;
        slot->first = Py_NewRef(value);
        self->size++;
        return 0;
    }
    if (slot->same != NULL) {
        int held = guard_holds(slot->same, value);
        if (held) {  /* equal values are one key, however often they occur */
            return held < 0 ? -1 : 0;
        }
        if (PyList_GET_SIZE(slot->same) >= self->limit) {
            PyErr_Format(self->error,
                         "more than %zd distinct keys with one hash in a message (hash flooding)",
                         self->limit);
            return -1;
        }
        return PyList_Append(slot->same, value);
    }
    int equal = PyObject_RichCompareBool(slot->first, value, Py_EQ);
    if (equal) {
        return equal < 0 ? -1 : 0;
    }
    slot->same = PyList_New(2);
    if (slot->same == NULL) {
        return -1;
    }
    PyList_SET_ITEM(slot->same, 0, Py_NewRef(slot->first));
    PyList_SET_ITEM(slot->same, 1, Py_NewRef(value));
    return 0;
}

static PyObject *
hash_guard_add(HashGuard *self, PyObject *value)
{
    if (guard_add(self, value) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
hash_guard_add_all(HashGuard *self, PyObject *values)
{
    PyObject *items = PySequence_Fast(values, "add_all takes a sequence");
    if (items == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(items); i++) {
        if (guard_add(self, PySequence_Fast_GET_ITEM(items, i)) < 0) {
            Py_DECREF(items);
            return NULL;
        }
    }
    Py_DECREF(items);
    Py_RETURN_NONE;
}

static PyObject *
hash_guard_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t limit;
    PyObject *error;
    if (!PyArg_ParseTuple(args, "nO:HashGuard", &limit, &error)) {
        return NULL;
    }
    HashGuard *self = (HashGuard *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->limit = limit;
        self->error = Py_NewRef(error);
    }
    return (PyObject *)self;
}

static int
hash_guard_traverse(HashGuard *self, visitproc visit, void *arg)
{
    for (size_t i = 0; self->slots != NULL && i <= self->mask; i++) {
        Py_VISIT(self->slots[i].first);
        Py_VISIT(self->slots[i].same);
    }
    Py_VISIT(self->error);
    return 0;
}

static int
hash_guard_clear(HashGuard *self)
{
    GuardSlot *slots = self->slots;
    size_t mask = self->mask;
    self->slots = NULL;
    self->size = 0;
    for (size_t i = 0; slots != NULL && i <= mask; i++) {
        Py_XDECREF(slots[i].first);
        Py_XDECREF(slots[i].same);
    }
    PyMem_Free(slots);
    Py_CLEAR(self->error);
    return 0;
}

static void
hash_guard_dealloc(HashGuard *self)
{
    PyObject_GC_UnTrack(self);
    hash_guard_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef hash_guard_methods[] = {
    {"add", (PyCFunction)hash_guard_add, METH_O, "Count one value; raise on a flood."},
    {"add_all", (PyCFunction)hash_guard_add_all, METH_O, "add() each value of a sequence."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HashGuardType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pbnb.core._speedups.HashGuard",
    .tp_doc = "HashGuard(limit, error): the C twin of serialize._HashGuard.",
    .tp_basicsize = sizeof(HashGuard),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = hash_guard_new,
    .tp_traverse = (traverseproc)hash_guard_traverse,
    .tp_clear = (inquiry)hash_guard_clear,
    .tp_dealloc = (destructor)hash_guard_dealloc,
    .tp_methods = hash_guard_methods,
};

static PyMethodDef methods[] = {
    {"scan_value", (PyCFunction)(void (*)(void))scan_value, METH_FASTCALL,
     "scan_value(leaves, is_leaf_flavor, root): the C twin of serialize.scan_value_walk."},
    {"tag_lists", (PyCFunction)(void (*)(void))tag_lists, METH_FASTCALL,
     "tag_lists(root, list_tag, max_depth): the C twin of serialize.tag_lists_walk."},
    {"tree_depth_exceeds", (PyCFunction)(void (*)(void))tree_depth_exceeds, METH_FASTCALL,
     "tree_depth_exceeds(root, max_depth): the C twin of serialize.tree_depth_walk."},
    {NULL, NULL, 0, NULL},
};

static int
add_types(PyObject *module)
{
    if (PyModule_AddType(module, &PlainDefaultType) < 0 || PyModule_AddType(module, &HashGuardType) < 0) {
        return -1;
    }
    return PyModule_AddType(module, &PlainHooksType);
}

/* Its types are static: shared by every interpreter, so not one with a GIL of its own. */
static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, add_types},
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pbnb.core._speedups",
    .m_doc = "C twins of the codec's walks (see pbnb/core/serialize.py).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    return PyModuleDef_Init(&module);
}
