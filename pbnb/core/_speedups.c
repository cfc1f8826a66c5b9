/* C twins of the two walks pbnb's codec runs on every nested value.
 *
 * pbnb/core/serialize.py holds the Python walks (needs_graph_walk and
 * tree_depth_walk) and uses these when this module was built; Pyodide and
 * machines without a compiler use the Python ones. tests/test_fuzz_codec.py
 * holds both to the same answers.
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

/* A growable array of borrowed references, with the depth each was found at. */
typedef struct {
    PyObject **items;
    Py_ssize_t *depths;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Stack;

static int
stack_push(Stack *stack, PyObject *obj, Py_ssize_t depth)
{
    if (stack->size == stack->capacity) {
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

/* ---- needs_graph ---------------------------------------------------------- */

typedef struct {
    PyObject *leaves;   /* frozenset of the types that are leaves (atoms, datetimes, ...) */
    AddressSet seen;    /* containers met so far that something else may also hold */
    Stack pending;      /* tracked containers whose children are still to visit */
    PyObject *others;   /* list of the types outside both sets met in one container */
    int found;          /* 1 once a repeat is met */
} GraphScan;

static int
graph_visit(PyObject *child, void *arg)
{
    GraphScan *scan = (GraphScan *)arg;
    PyTypeObject *kind = Py_TYPE(child);
    if (is_atom(kind)) {
        return 0;
    }
    if (is_plain_container(kind)) {
        if (!ONLY_ITS_PARENT_HOLDS(child)) {
            int repeated = address_set_add(&scan->seen, (uintptr_t)child);
            if (repeated) {
                scan->found = repeated > 0;
                return 1;  /* stop: a repeat, or an error */
            }
        }
        if (PyObject_GC_IsTracked(child)) {
            return stack_push(&scan->pending, child, 0) < 0 ? 1 : 0;
        }
        return 0;
    }
    /* A leaf type, or one to ask about once this container is done (asking runs
     * Python code, which must not run while the container is traversed). */
    int leaf = PySet_Contains(scan->leaves, (PyObject *)kind);
    if (leaf) {
        return leaf < 0 ? 1 : 0;
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

static PyObject *
needs_graph(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "needs_graph(leaves, is_leaf_flavor, root)");
        return NULL;
    }
    PyObject *leaves = args[0], *is_leaf_flavor = args[1], *root = args[2];
    if (!PyAnySet_Check(leaves)) {
        PyErr_SetString(PyExc_TypeError, "leaves must be a set or frozenset of types");
        return NULL;
    }
    PyTypeObject *kind = Py_TYPE(root);
    if (is_atom(kind)) {
        Py_RETURN_FALSE;
    }
    if (!is_plain_container(kind)) {
        int leaf = PySet_Contains(leaves, (PyObject *)kind);
        if (leaf < 0) {
            return NULL;
        }
        if (leaf) {
            Py_RETURN_FALSE;
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
        return PyBool_FromLong(!truth);
    }
    if (!PyObject_GC_IsTracked(root)) {
        Py_RETURN_FALSE;
    }
    GraphScan scan = {.leaves = leaves, .others = PyList_New(0)};
    if (scan.others == NULL) {
        return NULL;
    }
    int failed = address_set_add(&scan.seen, (uintptr_t)root) < 0
        || stack_push(&scan.pending, root, 0) < 0;
    while (!failed && !scan.found && scan.pending.size) {
        PyObject *container = scan.pending.items[--scan.pending.size];
        if (Py_TYPE(container)->tp_traverse(container, graph_visit, &scan)) {
            failed = !scan.found;
            break;
        }
        if (PyList_GET_SIZE(scan.others)) {
            int leaves_only = all_leaf_flavors(scan.others, is_leaf_flavor);
            failed = leaves_only < 0;
            scan.found = leaves_only == 0;
            failed = failed || PyList_SetSlice(scan.others, 0, PY_SSIZE_T_MAX, NULL) < 0;
        }
    }
    stack_free(&scan.pending);
    PyMem_Free(scan.seen.slots);
    Py_DECREF(scan.others);
    if (failed) {
        return NULL;
    }
    return PyBool_FromLong(scan.found);
}

/* ---- tree_depth_exceeds --------------------------------------------------- */

typedef struct {
    Stack pending;
    Py_ssize_t depth;      /* of the container being traversed */
    Py_ssize_t max_depth;
    int exceeded;
} DepthScan;

static int
depth_visit(PyObject *child, void *arg)
{
    DepthScan *scan = (DepthScan *)arg;
    if (!is_plain_container(Py_TYPE(child))) {
        return 0;
    }
    if (scan->depth >= scan->max_depth) {
        scan->exceeded = 1;
        return 1;
    }
    if (PyObject_GC_IsTracked(child)) {
        return stack_push(&scan->pending, child, scan->depth + 1) < 0 ? 1 : 0;
    }
    return 0;
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
    if (!PyObject_GC_IsTracked(root)) {
        Py_RETURN_FALSE;
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

static PyMethodDef methods[] = {
    {"needs_graph", (PyCFunction)(void (*)(void))needs_graph, METH_FASTCALL,
     "needs_graph(leaves, is_leaf_flavor, root): the C twin of serialize.needs_graph_walk."},
    {"tree_depth_exceeds", (PyCFunction)(void (*)(void))tree_depth_exceeds, METH_FASTCALL,
     "tree_depth_exceeds(root, max_depth): the C twin of serialize.tree_depth_walk."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
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
    return PyModuleDef_Init(&module);
}
